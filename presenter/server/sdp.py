"""Offer checks and loopback-only ICE (DESIGN.md section 7).

aiortc answers garbage SDP with 200 and an empty answer and leaks the peer connection, so
every offer is checked here first and a bad one becomes a UserError (HTTP 400) that says what
is missing. When the server is bound to loopback, media must stay on 127.0.0.1: aioice gathers
only the loopback address, and offers lose every other candidate.
"""
from __future__ import annotations

import ipaddress
import logging

import aioice.ice
from aiortc.sdp import SessionDescription

from presenter.errors import UserError

log = logging.getLogger(__name__)

MAX_SDP_BYTES = 32 * 1024
AUDIO_CODECS = {"opus", "pcmu", "pcma"}            # what aiortc can decode
VIDEO_CODECS = {"vp8", "h264"}                     # what aiortc can encode
LOOPBACK_HINT = ("this server is bound to loopback, so media stays on 127.0.0.1: Chromium needs "
                 "--allow-loopback-in-peer-connection, or start the server with --host 0.0.0.0 --token ...")

_original_get_host_addresses = aioice.ice.get_host_addresses
_original_datagram_received = aioice.ice.StunProtocol.datagram_received


def _loopback_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    return ["127.0.0.1"] if use_ipv4 else []


def _loopback_datagram_received(self, data: bytes | str, addr: tuple) -> None:
    # Chromium also sends checks to our 127.0.0.1 from its other interface addresses; answering
    # would send traffic to them (a peer-reflexive pair). Unanswered, only loopback pairs succeed.
    if is_loopback_host(addr[0]):
        _original_datagram_received(self, data, addr)


def restrict_ice_to_loopback(enabled: bool = True) -> None:
    """Make aioice (this whole process) gather only 127.0.0.1 host candidates and ignore packets
    from non-loopback addresses, or undo that."""
    aioice.ice.get_host_addresses = _loopback_addresses if enabled else _original_get_host_addresses
    aioice.ice.StunProtocol.datagram_received = (_loopback_datagram_received if enabled
                                                 else _original_datagram_received)


def is_loopback_host(host: str) -> bool:
    """True for 'localhost' and loopback IP literals."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _candidate_is_loopback(line: str) -> bool:
    # a=candidate:<foundation> <component> <transport> <priority> <address> <port> typ <type> ...
    parts = line.split()
    return len(parts) >= 6 and is_loopback_host(parts[4])


def check_offer(sdp: object, kind: object, *, need_send_audio: bool, need_recv_video: bool,
                loopback_only: bool) -> str:
    """Validate an offer; -> the SDP to hand aiortc (non-loopback candidates dropped if loopback_only).

    need_send_audio: the peer must send audio (microphone, WHIP publisher);
    need_recv_video: the peer must ask to receive video (presenter page, viewer)."""
    if kind != "offer":
        raise UserError(f"type is {kind!r}: expected 'offer'")
    if not isinstance(sdp, str) or not sdp.strip():
        raise UserError("sdp is missing or not a string")
    if len(sdp.encode()) > MAX_SDP_BYTES:
        raise UserError(f"sdp is {len(sdp.encode())} bytes; at most {MAX_SDP_BYTES} are accepted")
    if not sdp.lstrip().startswith("v=0"):
        raise UserError("sdp does not start with 'v=0': not a session description")
    lines = sdp.replace("\r\n", "\n").split("\n")
    if loopback_only:
        kept = [ln for ln in lines if not ln.startswith("a=candidate:") or _candidate_is_loopback(ln)]
        if len(kept) != len(lines):
            log.debug("dropped %d non-loopback candidates from an offer", len(lines) - len(kept))
        if not any(ln.startswith("a=candidate:") for ln in kept):
            raise UserError("the offer has no 127.0.0.1 ICE candidate; " + LOOPBACK_HINT)
        lines = kept
    text = "\r\n".join(ln for ln in lines if ln) + "\r\n"
    try:
        desc = SessionDescription.parse(text)
    except Exception as e:          # aiortc's parser raises assorted errors on garbage
        raise UserError(f"sdp could not be parsed ({type(e).__name__}: {e})") from None
    if not desc.media:
        raise UserError("sdp has no media sections (m= lines)")
    if not any(m.dtls and m.dtls.fingerprints for m in desc.media):
        raise UserError("sdp has no DTLS fingerprint (a=fingerprint); WebRTC media needs one")
    audio = [m for m in desc.media if m.kind == "audio" and m.port != 0]
    video = [m for m in desc.media if m.kind == "video" and m.port != 0]
    if need_send_audio:
        sending = [m for m in audio if m.direction in ("sendrecv", "sendonly")]
        if not sending:
            raise UserError("the offer sends no audio (no m=audio with sendrecv or sendonly): "
                            "add the microphone track before creating the offer")
        if not any(c.name.lower() in AUDIO_CODECS for m in sending for c in m.rtp.codecs):
            raise UserError("the offer's audio codecs are not supported: offer one of opus, PCMU, PCMA")
    if need_recv_video:
        receiving = [m for m in video if m.direction in ("sendrecv", "recvonly")]
        if not receiving:
            raise UserError("the offer does not ask for video (no m=video with recvonly or sendrecv): "
                            "add a recvonly video transceiver")
        if not any(c.name.lower() in VIDEO_CODECS for m in receiving for c in m.rtp.codecs):
            raise UserError("the offer's video codecs are not supported: offer VP8 or H264")
    return text
