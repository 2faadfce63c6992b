"""History in PostgreSQL: the system of record for what is finished (gateway.history.store), its
schema's migrations and daily partitions. Redis keeps what is hot (gateway.store); the worker's
archiver (workers.archive) copies settled request trees from one to the other."""
