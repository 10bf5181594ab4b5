"""The training engine: pure training logic (data, hyperparameters, tuning methods, tokenisation,
the Trainer loop). No database, server or hub imports; the Celery task drives it through
``worker.engine.trainer.train(plan, hooks)``.

Modules: ``data`` (read/validate JSONL, data_report), ``hparams`` (resolve "auto"), ``methods``
(registry; ``lora``), ``datasets`` (tokenisation, collator), ``trainer`` (train, load_for_inference,
reference_outputs).
"""
