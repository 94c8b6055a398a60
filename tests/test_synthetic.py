"""The synthetic world: seeded, item-response outcomes, minting unseen models."""

import numpy as np

from routerl.data.synthetic import SyntheticWorld


def test_seeded_and_reproducible():
    a, _, _ = SyntheticWorld(seed=3, n_prompts=100).build()
    b, _, _ = SyntheticWorld(seed=3, n_prompts=100).build()
    c, _, _ = SyntheticWorld(seed=4, n_prompts=100).build()
    assert np.array_equal(a.score, b.score) and not np.array_equal(a.score, c.score)


def test_outcomes_follow_skill_and_price_grows_with_skill():
    table, splits, models = SyntheticWorld(seed=0, n_seen=10, n_unseen=0, n_prompts=2000).build()
    mean_skill = np.array([np.mean(list(m.skill.values())) for m in models])
    accuracy = table.score.mean(axis=0)
    assert np.corrcoef(mean_skill, accuracy)[0, 1] > 0.8
    assert np.corrcoef(mean_skill, np.log(table.input_price))[0, 1] > 0.5


def test_splits_mark_unseen_and_mint_new_models():
    world = SyntheticWorld(seed=1, n_seen=4, n_unseen=2, n_prompts=50)
    table, splits, models = world.build()
    assert table.unseen_mask(splits).sum() == 2 and table.seen_mask(splits).sum() == 4
    new = world.mint_models(3)
    assert len({m.id for m in new} | set(table.models)) == len(table.models) + 3


def test_responses_carry_a_noisy_accept_signal():
    table, _, _ = SyntheticWorld(seed=2, n_prompts=300, signal=0.8).build()
    confident = np.array(
        [[("confident" in table.response(i, j)) for j in range(table.n_models)] for i in range(table.n_prompts)]
    )
    correct = table.score > 0.5
    assert confident[correct].mean() > 0.7 and confident[~correct].mean() < 0.3
