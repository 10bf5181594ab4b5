from hubtune.ids import new_id


def test_ids_made_in_a_row_sort_in_creation_order_even_within_one_millisecond():
    ids = [new_id("ftjob") for _ in range(20_000)]  # many share a millisecond
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert all(len(i) == len("ftjob-") + 24 for i in ids)
