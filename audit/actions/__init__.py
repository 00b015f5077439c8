from audit.actions.record import record

__all__ = ["record"]
