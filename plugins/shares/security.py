"""NTFS security descriptors over SMB (QUERY_INFO / SET_INFO, info type SECURITY): owner, group and DACL as the
server reports them (a self-relative SECURITY_DESCRIPTOR, kept base64 in the entry), and the DACL put back on
restore. Samba answers from the POSIX permissions and ACLs it maps, Windows from NTFS."""

from __future__ import annotations

import base64

from smbclient._io import SMBFileTransaction, SMBRawIO
from smbprotocol.exceptions import SMBException, SMBOSError
from smbprotocol.file_info import InfoType
from smbprotocol.open import (
    CreateOptions,
    FilePipePrinterAccessMask,
    SMB2QueryInfoRequest,
    SMB2QueryInfoResponse,
    SMB2SetInfoRequest,
    SMB2SetInfoResponse,
)

OWNER, GROUP, DACL = 0x1, 0x2, 0x4
MAX_SD = 64 * 1024


def _open(unc: str, access: int, kw: dict) -> SMBRawIO:
    return SMBRawIO(unc, mode="r", share_access="rwd", desired_access=access,
                    create_options=CreateOptions.FILE_OPEN_REPARSE_POINT, **kw)


def read_sd(unc: str, kw: dict) -> str | None:
    """The security descriptor (owner, group, DACL) base64-encoded; None when the server will not say."""
    try:
        with _open(unc, FilePipePrinterAccessMask.READ_CONTROL, kw) as raw:
            req = SMB2QueryInfoRequest()
            req["info_type"] = InfoType.SMB2_0_INFO_SECURITY
            req["output_buffer_length"] = MAX_SD
            req["additional_information"] = OWNER | GROUP | DACL
            req["file_id"] = raw.fd.file_id

            def receive(request):
                resp = SMB2QueryInfoResponse()
                resp.unpack(raw.fd.connection.receive(request)["data"].get_value())
                return resp["buffer"].get_value()

            t = SMBFileTransaction(raw)
            t += (req, receive)
            t.commit()
            sd = t.results[0]
    except (SMBOSError, SMBException, OSError):
        return None
    return base64.b64encode(sd).decode() if sd else None


def write_dacl(unc: str, sd_b64: str, kw: dict) -> None:
    """Put back the DACL of a stored descriptor (owner and group need privileges a backup user rarely has, and a
    restored file belongs to whoever restores it, as a copy would)."""
    sd = base64.b64decode(sd_b64)
    try:
        with _open(unc, FilePipePrinterAccessMask.WRITE_DAC, kw) as raw:
            req = SMB2SetInfoRequest()
            req["info_type"] = InfoType.SMB2_0_INFO_SECURITY
            req["additional_information"] = DACL
            req["file_id"] = raw.fd.file_id
            req["buffer"] = sd

            def receive(request):
                resp = SMB2SetInfoResponse()
                resp.unpack(raw.fd.connection.receive(request)["data"].get_value())
                return resp

            t = SMBFileTransaction(raw)
            t += (req, receive)
            t.commit()
    except (SMBOSError, SMBException) as e:
        raise OSError(f"permissions not restored: {e}") from None
