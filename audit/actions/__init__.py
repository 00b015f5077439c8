from audit.actions.record import record, record_many

__all__ = ["record", "record_many"]
