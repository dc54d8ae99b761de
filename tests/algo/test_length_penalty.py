

def test_default_config_shapes_exactly_as_before():
    # what the loop passed before (three keys) and shaping_from_config(defaults) give the same rewards
    old = dict(overlong_buffer_len=4, overlong_penalty_factor=1.0, truncation_penalty=0.5)
    cfg = RewardConfig(**old)
    args = ([1.0, 0.0, 1.0], [3, 10, 9], [False, True, False])
    assert shape_rewards(*args, max_len=10, **old) == shape_rewards(*args, max_len=10, **shaping_from_config(cfg, 5))
