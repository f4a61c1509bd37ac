"""Pagination of the API's lists.

Lists are paged by number, as with DRF's PageNumberPagination, with two changes
that keep a page of a permission-filtered list of 100,000 rows close to the cost of
the unfiltered one (``bench/api_cases.py`` measures both):

- The count is capped. It counts rows up to the end of the requested page or up to
  ``count_cap`` rows, whichever is further, plus one row to see whether more follow.
  When more follow, the answer says ``"count_capped": true`` and ``count`` is a
  lower bound: there are more than ``count`` rows. Otherwise ``count`` is exact.
  ``page=last`` counts every row, since only the exact count finds the last page.
- A page is read in two steps: first the ids of the page's rows (filters and
  ordering only), then those rows with their related objects. The database then
  fetches and joins the 50 rows of the page instead of every row before it. A view
  that reads its rows its own way pages ``queryset.values_list("pk", flat=True)``
  and gets the ids (the case list does).
"""

from __future__ import annotations

from django.core.paginator import InvalidPage, Paginator
from django.db.models import QuerySet
from django.db.models.query import ModelIterable
from django.utils.functional import cached_property
from rest_framework import pagination
from rest_framework.exceptions import NotFound
from rest_framework.response import Response


class CappedCountPaginator(Paginator):
    """Django's paginator, counting at most ``count_limit`` + 1 rows of a queryset
    (every row when ``count_limit`` is None) and reading pages ids first."""

    def __init__(self, object_list, per_page, *, count_limit=None, **kwargs):
        super().__init__(object_list, per_page, **kwargs)
        self.count_limit = count_limit

    @cached_property
    def count(self) -> int:
        if self.count_limit is None or not isinstance(self.object_list, QuerySet):
            return super().count
        # The ordering changes nothing in a count and only costs the database.
        return self.object_list.order_by()[: self.count_limit + 1].count()

    @property
    def count_capped(self) -> bool:
        """Whether the count stopped at the limit: more than ``count_limit`` rows
        exist, and ``count`` is not their number."""
        return (
            self.count_limit is not None
            and isinstance(self.object_list, QuerySet)
            and self.count > self.count_limit
        )

    def page(self, number):
        number = self.validate_number(number)
        bottom = (number - 1) * self.per_page
        top = bottom + self.per_page
        if top + self.orphans >= self.count:
            top = self.count
        return self._get_page(_page_rows(self.object_list, bottom, top), number, self)


def _page_rows(object_list, bottom: int, top: int):
    """Rows ``bottom`` to ``top`` of ``object_list``: for a queryset of model
    instances, the ids by the queryset's filters and ordering first, then the rows.
    The second query keeps select_related and prefetch_related; a row that went
    away in between is left out."""
    if not (
        isinstance(object_list, QuerySet)
        and object_list._iterable_class is ModelIterable
        and not object_list.query.combinator
        and not object_list.query.is_sliced
        and not object_list.query.distinct_fields
    ):
        return object_list[bottom:top]
    ids = list(object_list.values_list("pk", flat=True)[bottom:top])
    if not ids:
        return []
    rows = {row.pk: row for row in object_list.order_by().filter(pk__in=ids)}
    return [rows[pk] for pk in ids if pk in rows]


class PageNumberPagination(pagination.PageNumberPagination):
    """``?page=N&page_size=M``; the answer carries ``count`` and ``count_capped``
    (see the module's docstring)."""

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200
    #: At least this many rows are counted before ``count`` becomes a lower bound.
    count_cap = 1000
    django_paginator_class = CappedCountPaginator

    def paginate_queryset(self, queryset, request, view=None):
        self.request = request
        page_size = self.get_page_size(request)
        if not page_size:
            return None
        raw = request.query_params.get(self.page_query_param) or 1
        if raw in self.last_page_strings:
            count_limit = None
        else:
            try:
                number = int(raw)
            except (TypeError, ValueError):
                number = 1  # the paginator answers the invalid number below
            count_limit = max(self.count_cap, number * page_size)
        paginator = self.django_paginator_class(
            queryset, page_size, count_limit=count_limit
        )
        page_number = self.get_page_number(request, paginator)
        try:
            self.page = paginator.page(page_number)
        except InvalidPage as exc:
            raise NotFound(
                self.invalid_page_message.format(
                    page_number=page_number, message=str(exc)
                )
            ) from None
        if paginator.num_pages > 1 and self.template is not None:
            self.display_page_controls = True
        return list(self.page)

    def get_paginated_response(self, data):
        paginator = self.page.paginator
        capped = paginator.count_capped
        return Response(
            {
                "count": paginator.count_limit if capped else paginator.count,
                "count_capped": capped,
                "next": self.get_next_link(),
                "previous": self.get_previous_link(),
                "results": data,
            }
        )

    def get_paginated_response_schema(self, schema):
        answer = super().get_paginated_response_schema(schema)
        properties = answer["properties"]
        properties["count"] = {
            **properties["count"],
            "description": "How many rows match; when count_capped is true, more "
            "than this many match.",
        }
        answer["properties"] = {
            "count": properties.pop("count"),
            "count_capped": {
                "type": "boolean",
                "example": False,
                "description": "True when more than count rows match: rows are "
                f"counted up to {self.count_cap} or to the end of the requested "
                "page, whichever is more. page=last counts them all.",
            },
            **properties,
        }
        answer["required"] = ["count", "count_capped", "results"]
        return answer


class AuditCursorPagination(pagination.CursorPagination):
    """The audit trail grows without end: pages follow a cursor on ``seq`` instead
    of counting every row."""

    ordering = "-seq"
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200
