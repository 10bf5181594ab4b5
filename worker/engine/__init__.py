"""The training engine: pure training logic (data, hyperparameters, tuning methods, tokenisation,
the Trainer loop). No database, server or hub imports; the Celery task drives it through
``worker.engine.trainer.train(plan, hooks)``.

Modules, lower layers first (no import cycles; tests/test_layout.py and the architecture report check):
``data`` (read/validate JSONL/CSV), ``options`` (OptionError, goal metrics, option checks; no torch),
``plan`` (TrainPlan and its JSON form, TrainResult, Hooks), ``hparams`` (resolve "auto"), ``methods``
(``base``: the method interface; ``registry``: name -> method; one module per method), ``datasets``
(tokenisation, collators), ``data_report``, ``sampling``, ``evaluate``, ``probe``, ``completions``,
``lr_search``, ``loading`` (base model, tokenizer), ``reference`` (probe outputs), ``artifact``
(save, load_for_inference), ``callbacks`` and ``hf_trainer`` (transformers' Trainer as the engine runs it),
``trainer`` (train, train_local), ``distributed`` (the parent of a multi-process run) and ``rank``
(one process of it), ``runtime`` (warm imports).
"""
