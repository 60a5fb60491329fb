"""Order books: the compiled `Book` (numba kernel) and the plain `ReferenceBook` (the oracle)."""

from engine.book.book import BatchResult, Book
from engine.book.events import BookEvent, BookReject, EventKind
from engine.book.reference import ReferenceBook

__all__ = ["BatchResult", "Book", "BookEvent", "BookReject", "EventKind", "ReferenceBook"]
