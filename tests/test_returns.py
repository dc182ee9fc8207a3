import numpy as np

from shared.data.returns import mc_return_to_go


def test_discounted_reward_to_go():
    # rewards -1, -1, 0 (success last step), gamma 0.5:
    # G2 = 0; G1 = -1 + 0.5 * 0 = -1; G0 = -1 + 0.5 * -1 = -1.5
    np.testing.assert_allclose(mc_return_to_go([-1, -1, 0], 0.5, r_neg=-1.0), [-1.5, -1.0, 0.0])


def test_never_successful_episode_gets_geometric_sum():
    out = mc_return_to_go([-1, -1, -1, -1], 0.9, r_neg=-1.0)
    np.testing.assert_allclose(out, [-10.0] * 4, rtol=1e-6)  # -1 / (1 - 0.9)


def test_dense_rewards_without_r_neg():
    np.testing.assert_allclose(mc_return_to_go([1.0, 2.0], 0.5, r_neg=None), [2.0, 2.0])
    # with r_neg=None an all-equal episode is summed normally
    np.testing.assert_allclose(mc_return_to_go([-1.0, -1.0], 0.5, r_neg=None), [-1.5, -1.0])
