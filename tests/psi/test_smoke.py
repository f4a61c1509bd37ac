from psi.audit import audit_append, audit_verify


def test_audit_chain_links_events(db, surgeon):
    first = audit_append(actor=surgeon, action="test.one", payload={"n": 1})
    second = audit_append(actor=surgeon, action="test.two")
    assert second.prev_hash == first.hash
    assert audit_verify().ok
