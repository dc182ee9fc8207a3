"""``python -m learner.study``: the study's command line (``learner.study.cli``)."""

from learner.study.cli import main

main()
