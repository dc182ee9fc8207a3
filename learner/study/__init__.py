"""The seeded study: the paper's methods on simulated tasks, one process per study, exact UTD.

- ``suites``: the tasks and suites, as data;
- ``sources``: the offline data and pre-trained checkpoints runs start from, made once and reused;
- ``runner``: one run (a method on a task with a seed);
- ``sweep``: a study's cells, the finished ones kept, the rest run;
- ``claims``: the paper's claims as paired tests, fixed before any study ran;
- ``results``: tables, intervals and verdicts over ``results.json`` (pure functions);
- ``report``: ``results.md`` and the figures;
- ``costs``: the update cost model behind ``--dry-run``;
- ``guided_data``: the paper's robot data (a guided RLPD run's buffer) for the Table-1 analogue;
- ``cli``: ``wsrl-study`` / ``launch/study.sh`` (docs/study.md).
"""
