"""The local stack behind `make run`: moto server, `chalice local`, the SQS worker, the scheduler."""
