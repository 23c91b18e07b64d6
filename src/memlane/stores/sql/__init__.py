"""What SQLite and PostgreSQL share: the filter compiler (:mod:`.filters`) over a small
:class:`~memlane.stores.sql.filters.Dialect`, and the codecs and op groups both stores use
(:mod:`.codecs`). Each backend's ``*_sql`` module keeps only its dialect: schema,
migrations, statement text and row readers."""
