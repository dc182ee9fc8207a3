"""Data on disk and what it means: the one dataset format, labelled images, Monte-Carlo returns."""
