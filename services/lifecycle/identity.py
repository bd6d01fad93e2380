"""Identity resolution (pure) over the slice of the id graph a batch touches.

Every id ever seen (userId, anonymousId, alias previousId) maps to one customer. A customer is
*known* once a userId names it; its id is that userId. An event that carries a userId together
with another id links them: a new id joins the user's customer, an anonymous customer is merged
into it, and a customer known by another userId is left alone (two identified profiles are never
merged automatically).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Identities:
    customer_of: dict[str, str]  # id -> customer id, for every id of the batch
    existing: set[str]  # customers that have state (stored, or created earlier in the batch)
    known: set[str]  # customers identified by a userId
    merges: list[tuple[str, str]] = field(default_factory=list)  # (absorbed, into)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (id, customer) not linked
    changed: set[str] = field(default_factory=set)  # ids whose customer changed
    _into: dict[str, str] = field(default_factory=dict)  # absorbed -> into

    def resolve(
        self, user_id: str | None, anonymous_id: str | None, previous_id: str | None = None
    ) -> str:
        """The customer an event with these ids belongs to, linking and merging as it says."""
        if user_id is None:
            assert anonymous_id is not None
            customer = self.customer_of[anonymous_id]
            self.existing.add(customer)
            return customer
        customer = self.customer_of[user_id]
        self.existing.add(customer)
        self.known.add(customer)
        for other in (anonymous_id, previous_id):
            if other is None:
                continue
            theirs = self.customer_of[other]
            if theirs == customer:
                continue
            if theirs not in self.existing:  # an id never seen before joins this customer
                self.customer_of[other] = customer
                self.changed.add(other)
            elif theirs in self.known:
                self.refused.append((other, customer))
            else:
                self._move(theirs, customer)
                self.existing.discard(theirs)
                self.merges.append((theirs, customer))
                self._into[theirs] = customer
        return customer

    def final(self, customer: str) -> str:
        """Where a customer ended up after the batch's merges."""
        while customer in self._into:
            customer = self._into[customer]
        return customer

    def _move(self, old: str, new: str) -> None:
        for identifier, current in self.customer_of.items():
            if current == old:
                self.customer_of[identifier] = new
                self.changed.add(identifier)
