"""Run in a fresh process with HF_ENDPOINT set (huggingface_hub reads it at import time): load the base
model and the pushed adapter BY REPO ID from the hub, and print the adapter's reference outputs."""

from __future__ import annotations

import json
import sys


def main(base_repo: str, base_rev: str, repo_id: str, revision: str, task: str, inputs_json: str) -> None:
    from huggingface_hub import hf_hub_download, snapshot_download
    from peft import PeftModel

    from worker.engine.trainer import load_base_model, load_tokenizer, reference_outputs

    base_dir = snapshot_download(base_repo, revision=base_rev)
    info = json.loads(open(hf_hub_download(repo_id, "hubtune_training.json", revision=revision)).read())
    tokenizer = load_tokenizer(base_dir)
    base, _ = load_base_model(base_dir, task=task, labels=info.get("labels"), tokenizer=tokenizer)
    model = PeftModel.from_pretrained(base, repo_id, revision=revision)
    print(json.dumps(reference_outputs(model, tokenizer, task=task, inputs=json.loads(inputs_json))))


if __name__ == "__main__":
    main(*sys.argv[1:])
