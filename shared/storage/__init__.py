"""Storage: the replay buffer (ring, sampling, incremental cuts), frames on disk, agent checkpoints."""
