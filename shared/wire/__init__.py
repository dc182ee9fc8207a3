"""The wire between actor and learner: the message protocol, chunks of transitions, sockets and CURVE keys, policy weights."""
