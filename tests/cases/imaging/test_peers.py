"""Which DICOM nodes may open an association (services.dicom_peer_admit)."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from cases.imaging.models import DicomPeer
from cases.imaging.services import dicom_peer_admit
from psi.errors import PermissionRefused


@pytest.fixture
def peer(hospital_a):
    return DicomPeer.objects.create(hospital=hospital_a, ae_title="HOSPA_PACS")


def test_a_peer_without_networks_is_admitted_from_any_address(peer, hospital_a):
    assert dicom_peer_admit("HOSPA_PACS", "203.0.113.9") == hospital_a.pk
    assert dicom_peer_admit("HOSPA_PACS  ", "::1") == hospital_a.pk


def test_unknown_and_inactive_peers_are_refused(peer):
    with pytest.raises(PermissionRefused, match="Unknown calling AE title 'STRANGER'"):
        dicom_peer_admit("STRANGER", "127.0.0.1")
    peer.is_active = False
    peer.save()
    with pytest.raises(PermissionRefused, match="Unknown calling AE title"):
        dicom_peer_admit("HOSPA_PACS", "127.0.0.1")


@pytest.mark.parametrize(
    ("address", "admitted"),
    [
        ("10.1.200.3", True),  # in 10.1.0.0/16
        ("10.2.0.1", False),
        ("192.0.2.7", True),  # the one address named
        ("192.0.2.8", False),
        ("::ffff:10.1.0.5", True),  # an IPv4 caller seen by a listener on "::"
        ("2001:db8:5::1", True),
        ("2001:db9::1", False),
        ("fe80::1%eth0", True),  # a link-local address with its zone
        ("fe81::1", False),
        ("", False),
        ("not an address", False),
    ],
)
def test_a_peer_with_networks_is_admitted_only_from_them(peer, address, admitted):
    peer.networks = "10.1.0.0/16, 192.0.2.7\n2001:db8::/32 fe80::/64"
    peer.full_clean()
    peer.save()
    if admitted:
        assert dicom_peer_admit("HOSPA_PACS", address) == peer.hospital_id
    else:
        with pytest.raises(PermissionRefused, match="may not call from"):
            dicom_peer_admit("HOSPA_PACS", address)


def test_networks_that_are_not_addresses_are_refused_by_name(peer):
    peer.networks = "10.0.0.0/8, pacs.hospital.example"
    with pytest.raises(ValidationError) as refused:
        peer.full_clean()
    assert "networks" in refused.value.message_dict
    assert (
        "'pacs.hospital.example' is not an IP address or network"
        in (refused.value.message_dict["networks"][0])
    )


def test_networks_saved_without_validation_refuse_every_address(peer):
    DicomPeer.objects.filter(pk=peer.pk).update(networks="10.0.0.0/8 pacs.example")
    with pytest.raises(PermissionRefused, match="are not valid"):
        dicom_peer_admit("HOSPA_PACS", "10.1.2.3")
