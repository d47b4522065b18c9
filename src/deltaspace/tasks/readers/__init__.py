"""Readers of suite v2's source files, one module per source package.

Every reader returns a DataFrame with columns ``text``, ``label`` (a label *name*), for pair tasks
``text_pair``, and, where several examples come from one document, ``group`` (the document's id), so
that a whole document lands in one split. Cleaning and de-duplication happen afterwards
(:mod:`deltaspace.tasks.examples`).
"""
