from typing import Any


class HashxError(Exception):
    """An error answer from the exchange, carrying its RFC 9457 problem document."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status = status
        self.problem = problem
        self.type = str(problem.get("type", ""))
        self.title = str(problem.get("title", ""))
        self.detail = str(problem.get("detail", ""))
        super().__init__(
            f"{status} {self.title}: {self.detail}" if self.detail else f"{status} {self.title}"
        )
