"""What SQLite and PostgreSQL share: what differs between them, as the shared SQL needs
it (:mod:`.dialect`); the filter compiler (:mod:`.filters`) and the statements both stores
run (:mod:`.statements`) over that dialect, and the read-only ops answered by one such
statement (:mod:`.queries`); the table layouts and row codecs (:mod:`.codecs`)
and one migration applier (:mod:`.migrations`). Each backend's ``*_sql`` module keeps only
its dialect: schema, migrations, the statement text that really differs and row readers."""
