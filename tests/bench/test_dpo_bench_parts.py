"""The preference pairs bench/dpo_vs_sft.py and tests/e2e/test_dpo_e2e.py build from chatterbot-corpus."""

from __future__ import annotations

from bench.real_data import UNHELPFUL_REPLIES, chatterbot_preference_pairs, chatterbot_conversations
from testkit.real_data import real


def test_pairs_are_real_answers_against_unhelpful_replies_and_never_share_a_question():
    train, test = real(chatterbot_preference_pairs, 40, 16, seed=7)
    assert (len(train), len(test)) == (40, 16)
    answers = {conv[1].strip() for convs in chatterbot_conversations().values() for conv in convs}
    questions = [row["input"]["messages"][-1]["content"].lower() for row in train + test]
    assert len(set(questions)) == len(questions)  # held-out questions were never trained on
    for row in train + test:
        assert row["preferred_output"][0]["content"] in answers
        assert row["non_preferred_output"][0]["content"] in UNHELPFUL_REPLIES
    assert chatterbot_preference_pairs(40, 16, seed=7) == (train, test)  # seeded: the same pairs every run
