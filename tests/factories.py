"""Small factories that build test images in memory, with metadata in every container veilpix
must strip. Everything is synthetic (drawn with Pillow, metadata assembled byte by byte or
with piexif), so these tests run without ../shared.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import piexif
from PIL import Image, ImageCms, ImageDraw

GPS = (52.516275, 13.377704)  # Brandenburger Tor
SECRET = "Jane Doe"
SERIAL = "SN-4711-0042"
COMMENT = "holiday with Max, do not share"


# --------------------------------------------------------------------------- pictures
def picture(size: tuple[int, int] = (64, 48), mode: str = "RGB") -> Image.Image:
    """An asymmetric picture: four coloured quadrants and a dark corner mark, so that any
    wrong rotation or flip is visible in the pixels."""
    w, h = size
    im = Image.new("RGB", size)
    d = ImageDraw.Draw(im)
    d.rectangle([0, 0, w // 2, h // 2], fill=(220, 40, 40))
    d.rectangle([w // 2, 0, w, h // 2], fill=(40, 200, 60))
    d.rectangle([0, h // 2, w // 2, h], fill=(40, 60, 220))
    d.rectangle([w // 2, h // 2, w, h], fill=(240, 220, 40))
    d.rectangle([0, 0, max(1, w // 8), max(1, h // 8)], fill=(10, 10, 10))
    if mode == "RGBA":
        im = im.convert("RGBA")
        im.putalpha(Image.linear_gradient("L").resize(size))
    elif mode != "RGB":
        im = im.convert(mode)
    return im


def stored_for(upright: Image.Image, orientation: int) -> Image.Image:
    """The pixels a camera stores so that applying ``orientation`` shows ``upright``."""
    inverse = {
        2: Image.Transpose.FLIP_LEFT_RIGHT,
        3: Image.Transpose.ROTATE_180,
        4: Image.Transpose.FLIP_TOP_BOTTOM,
        5: Image.Transpose.TRANSPOSE,
        6: Image.Transpose.ROTATE_90,
        7: Image.Transpose.TRANSVERSE,
        8: Image.Transpose.ROTATE_270,
    }
    op = inverse.get(orientation)
    return upright.transpose(op) if op is not None else upright.copy()


def encode(im: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kwargs)
    return buf.getvalue()


def different_thumbnail() -> bytes:
    """A JPEG thumbnail showing a *different* picture (a red square with a white bar)."""
    im = Image.new("RGB", (40, 30), (255, 0, 0))
    ImageDraw.Draw(im).rectangle([5, 12, 35, 18], fill=(255, 255, 255))
    return encode(im, "JPEG", quality=70)


# --------------------------------------------------------------------------- metadata blobs
def _dms(value: float) -> tuple[tuple[int, int], ...]:
    d = int(value)
    m = int((value - d) * 60)
    s = round((value - d - m / 60) * 3600 * 100)
    return ((d, 1), (m, 1), (s, 100))


def exif_tiff(
    *,
    orientation: int | None = None,
    gps: tuple[float, float] | None = GPS,
    thumbnail: bool = True,
    makernote: bool = True,
) -> bytes:
    """A TIFF-structured EXIF block (no 'Exif\\0\\0' prefix) with the usual suspects."""
    zeroth: dict[int, object] = {
        piexif.ImageIFD.Make: b"VeilCam",
        piexif.ImageIFD.Model: b"VeilCam V1",
        piexif.ImageIFD.Software: b"VeilOS 1.0",
        piexif.ImageIFD.DateTime: b"2024:05:06 07:08:09",
        piexif.ImageIFD.Artist: SECRET.encode(),
        piexif.ImageIFD.Copyright: b"(c) " + SECRET.encode(),
        piexif.ImageIFD.ImageDescription: COMMENT.encode(),
    }
    if orientation is not None:
        zeroth[piexif.ImageIFD.Orientation] = orientation
    exif: dict[int, object] = {
        piexif.ExifIFD.DateTimeOriginal: b"2024:05:06 07:08:09",
        piexif.ExifIFD.BodySerialNumber: SERIAL.encode(),
        piexif.ExifIFD.CameraOwnerName: SECRET.encode(),
    }
    if makernote:
        exif[piexif.ExifIFD.MakerNote] = b"VEILCAM\x00" + SERIAL.encode() + bytes(32)
    data: dict[str, object] = {"0th": zeroth, "Exif": exif}
    if gps is not None:
        data["GPS"] = {
            piexif.GPSIFD.GPSLatitudeRef: b"N" if gps[0] >= 0 else b"S",
            piexif.GPSIFD.GPSLatitude: _dms(abs(gps[0])),
            piexif.GPSIFD.GPSLongitudeRef: b"E" if gps[1] >= 0 else b"W",
            piexif.GPSIFD.GPSLongitude: _dms(abs(gps[1])),
        }
    if thumbnail:
        data["1st"] = {
            piexif.ImageIFD.JPEGInterchangeFormat: 0,
            piexif.ImageIFD.JPEGInterchangeFormatLength: 0,
        }
        data["thumbnail"] = different_thumbnail()
    raw = piexif.dump(data)
    return raw[6:] if raw.startswith(b"Exif") else raw


def xmp_packet(*, gps: bool = True, orientation: int | None = None) -> bytes:
    props = f'photoshop:City="Berlin" xmp:CreatorTool="VeilEdit 2" aux:SerialNumber="{SERIAL}"'
    if gps:
        props += ' exif:GPSLatitude="52,30.9765N" exif:GPSLongitude="13,22.6622E"'
    if orientation is not None:
        props += f' tiff:Orientation="{orientation}"'
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/" '
        'xmlns:photoshop="http://ns.adobe.com/photoshop/1.0/" xmlns:xmp="http://ns.adobe.com/xap/1.0/" '
        'xmlns:aux="http://ns.adobe.com/exif/1.0/aux/" xmlns:exif="http://ns.adobe.com/exif/1.0/" '
        f'xmlns:tiff="http://ns.adobe.com/tiff/1.0/" {props}>'
        f"<dc:creator><rdf:Seq><rdf:li>{SECRET}</rdf:li></rdf:Seq></dc:creator>"
        "</rdf:Description></rdf:RDF></x:xmpmeta>"
        '<?xpacket end="w"?>'
    ).encode()


def iptc_iim() -> bytes:
    fields = ((80, SECRET.encode()), (90, b"Berlin"), (116, b"(c) " + SECRET.encode()))
    return b"".join(b"\x1c\x02" + bytes((ds,)) + struct.pack(">H", len(v)) + v for ds, v in fields)


def photoshop_irb() -> bytes:
    iptc = iptc_iim()
    res = (
        b"8BIM\x04\x04\x00\x00" + struct.pack(">I", len(iptc)) + iptc + (b"\x00" * (len(iptc) & 1))
    )
    thumb = different_thumbnail()
    res += (
        b"8BIM\x04\x0c\x00\x00"
        + struct.pack(">I", len(thumb))
        + thumb
        + (b"\x00" * (len(thumb) & 1))
    )
    return res


def icc_profile(kind: str = "srgb") -> bytes:
    """'srgb': Pillow's built-in sRGB profile (standard). 'device': the same colorimetry
    under a personal device name (must be applied and dropped)."""
    data = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    if kind == "srgb":
        return bytes(data)
    old = "sRGB built-in".encode("utf-16-be")
    new = "Jane's MacBook".encode("utf-16-be")[: len(old)].ljust(len(old), b"\x00")
    at = bytes(data).find(old)
    assert at > 0, "description not found in the profile"
    data[at : at + len(old)] = new
    data[84:100] = bytes(16)  # profile ID no longer matches: clear it
    return bytes(data)


# --------------------------------------------------------------------------- JPEG
def _seg(marker: int, payload: bytes) -> bytes:
    return bytes((0xFF, marker)) + struct.pack(">H", len(payload) + 2) + payload


JUMBF_C2PA = (
    b"JP\x00\x01\x00\x00\x00\x01"
    + struct.pack(">I", 40)
    + b"jumb"
    + struct.pack(">I", 24)
    + b"jumdc2pa"
    + bytes(12)
)


def jpeg(
    *,
    upright: Image.Image | None = None,
    orientation: int | None = None,
    exif: bool = True,
    xmp: bool = True,
    iptc: bool = True,
    comment: bool = True,
    vendor: bool = True,
    icc: bytes | None = None,
    trailer: bytes = b"",
    progressive: bool = False,
    cmyk: bool = False,
    quality: int = 90,
) -> bytes:
    """A JPEG with metadata in EXIF (GPS, serials, thumbnail), XMP, extended XMP, IPTC,
    COM, vendor APPn segments, APP11 C2PA and an optional trailer after EOI."""
    up = upright if upright is not None else picture()
    im = stored_for(up, orientation or 1)
    if cmyk:
        im = im.convert("CMYK")
    base = encode(im, "JPEG", quality=quality, progressive=progressive, icc_profile=icc)
    segs = b""
    if exif:
        segs += _seg(0xE1, b"Exif\x00\x00" + exif_tiff(orientation=orientation))
    elif orientation is not None:
        segs += _seg(
            0xE1,
            b"Exif\x00\x00"
            + exif_tiff(orientation=orientation, gps=None, thumbnail=False, makernote=False),
        )
    if xmp:
        segs += _seg(0xE1, b"http://ns.adobe.com/xap/1.0/\x00" + xmp_packet())
        guid = b"0123456789ABCDEF0123456789ABCDEF"
        ext = b"<x:xmpmeta><rdf:RDF><rdf:Description photoshop:Country='Germany'/></rdf:RDF></x:xmpmeta>"
        segs += _seg(
            0xE1,
            b"http://ns.adobe.com/xmp/extension/\x00"
            + guid
            + struct.pack(">II", len(ext), 0)
            + ext,
        )
    if iptc:
        segs += _seg(0xED, b"Photoshop 3.0\x00" + photoshop_irb())
    if comment:
        segs += _seg(0xFE, COMMENT.encode())
    if vendor:
        segs += _seg(0xE3, b"Meta\x00" + SERIAL.encode())
        segs += _seg(0xE6, b"GoPro\x00" + SERIAL.encode())
        segs += _seg(0xEB, JUMBF_C2PA)
        segs += _seg(0xEF, b"Ducky-ish vendor " + SECRET.encode())
        segs += _seg(0xE2, b"FPXR\x00" + bytes(20))
    return base[:2] + segs + base[2:] + trailer


def mpo(second: Image.Image | None = None) -> bytes:
    """A primary JPEG with an MPF APP2 index and a second JPEG image after its EOI."""
    first = jpeg(exif=True, xmp=False, iptc=False, comment=False, vendor=False)
    other = encode(second or picture().transpose(Image.Transpose.FLIP_LEFT_RIGHT), "JPEG")
    mpf = _seg(0xE2, b"MPF\x00MM\x00*\x00\x00\x00\x08" + bytes(32))
    return first[:2] + mpf + first[2:] + other


def scan_data(data: bytes) -> bytes:
    """Everything from the first SOS marker to EOI (the entropy-coded image data)."""
    return data[data.index(b"\xff\xda") : data.rindex(b"\xff\xd9") + 2]


# --------------------------------------------------------------------------- PNG
def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    out = []
    p = 8
    while p < len(data):
        (n,) = struct.unpack_from(">I", data, p)
        out.append((data[p + 4 : p + 8], data[p + 8 : p + 8 + n]))
        p += 12 + n
    return out


def png(
    *,
    im: Image.Image | None = None,
    orientation: int | None = None,
    text: bool = True,
    exif: bool = True,
    xmp_gps: bool = True,
    time: bool = True,
    private: bool = True,
    c2pa: bool = True,
    icc: bytes | None = None,
    trailer: bytes = b"",
    apng_frames: int = 0,
    xmp_orientation: int | None = None,
    **save: object,
) -> bytes:
    """A PNG with tEXt/zTXt/iTXt (XMP with GPS), eXIf, tIME, caBX, a private chunk, and
    optionally iCCP, APNG frames and data after IEND."""
    base_im = stored_for(im if im is not None else picture(), orientation or xmp_orientation or 1)
    if apng_frames:
        frames = [base_im] + [base_im.rotate(15 * i) for i in range(1, apng_frames)]
        data = encode(
            frames[0], "PNG", save_all=True, append_images=frames[1:], duration=80, loop=0, **save
        )
    else:
        data = encode(base_im, "PNG", **save)
    chunks = png_chunks(data)
    extra: list[bytes] = []
    if icc is not None:
        extra.append(png_chunk(b"iCCP", b"Jane's screen\x00\x00" + zlib.compress(icc)))
    if text:
        extra.append(png_chunk(b"tEXt", b"Author\x00" + SECRET.encode()))
        extra.append(png_chunk(b"zTXt", b"Comment\x00\x00" + zlib.compress(COMMENT.encode())))
    if xmp_gps or xmp_orientation is not None:
        extra.append(
            png_chunk(
                b"iTXt",
                b"XML:com.adobe.xmp\x00\x00\x00\x00\x00"
                + xmp_packet(gps=xmp_gps, orientation=xmp_orientation),
            )
        )
    if exif or orientation is not None:
        extra.append(
            png_chunk(
                b"eXIf",
                exif_tiff(orientation=orientation, gps=GPS if exif else None, thumbnail=exif),
            )
        )
    if time:
        extra.append(png_chunk(b"tIME", struct.pack(">HBBBBB", 2024, 5, 6, 7, 8, 9)))
    if private:
        extra.append(png_chunk(b"prVt", SERIAL.encode()))
    if c2pa:
        extra.append(png_chunk(b"caBX", JUMBF_C2PA[2:]))
    out = bytearray(data[:8])
    for kind, body in chunks:
        if kind == b"IDAT" and extra:
            out += b"".join(extra)
            extra = []
        out += png_chunk(kind, body)
    return bytes(out) + trailer


# --------------------------------------------------------------------------- WebP
def riff_chunk(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("<I", len(body)) + body + (b"\x00" if len(body) & 1 else b"")


def webp(
    *,
    im: Image.Image | None = None,
    orientation: int | None = None,
    lossless: bool = False,
    frames: int = 1,
    exif: bool = True,
    xmp: bool = True,
    icc: bytes | None = None,
    unknown: bool = True,
) -> bytes:
    """A WebP (VP8X container) with EXIF, XMP, an unknown chunk and optionally ICCP."""
    base = stored_for(im if im is not None else picture(), orientation or 1)
    if frames > 1:
        seq = [base] + [base.rotate(20 * i) for i in range(1, frames)]
        data = encode(
            seq[0],
            "WEBP",
            save_all=True,
            append_images=seq[1:],
            duration=70,
            loop=0,
            lossless=lossless,
        )
    else:
        data = encode(
            base,
            "WEBP",
            lossless=lossless,
            quality=90,
            exif=b"Exif\x00\x00" + exif_tiff(),
            icc_profile=b"",
        )
    # rebuild with our own chunks so every kind is present exactly as intended
    p = 12
    chunks = []
    while p < len(data):
        kind = data[p : p + 4]
        (n,) = struct.unpack_from("<I", data, p + 4)
        chunks.append((kind, data[p + 8 : p + 8 + n]))
        p += 8 + n + (n & 1)
    chunks = [(k, b) for k, b in chunks if k not in (b"EXIF", b"XMP ", b"ICCP", b"VP8X")]
    w, h = base.size
    flags = 0x02 if frames > 1 else 0
    flags |= 0x10 if base.mode == "RGBA" else 0
    body = b""
    if icc is not None:
        flags |= 0x20
        body += riff_chunk(b"ICCP", icc)
    body += b"".join(riff_chunk(k, b) for k, b in chunks)
    if exif or orientation is not None:
        flags |= 0x08
        body += riff_chunk(
            b"EXIF", exif_tiff(orientation=orientation, gps=GPS if exif else None, thumbnail=exif)
        )
    if xmp:
        flags |= 0x04
        body += riff_chunk(b"XMP ", xmp_packet())
    if unknown:
        body += riff_chunk(b"ZZZZ", SERIAL.encode())
    vp8x = riff_chunk(
        b"VP8X",
        bytes((flags, 0, 0, 0)) + (w - 1).to_bytes(3, "little") + (h - 1).to_bytes(3, "little"),
    )
    payload = b"WEBP" + vp8x + body
    return b"RIFF" + struct.pack("<I", len(payload)) + payload


# --------------------------------------------------------------------------- GIF
def gif(
    *,
    frames: int = 3,
    comment: bool = True,
    xmp: bool = True,
    plaintext: bool = True,
    trailer: bytes = b"",
    loop: int | None = 0,
) -> bytes:
    """An (animated) GIF with comment, plain-text and XMP/ICC/unknown application extensions."""
    base = picture().convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    seq = [base] + [
        base.transpose(
            Image.Transpose.FLIP_LEFT_RIGHT if i % 2 else Image.Transpose.FLIP_TOP_BOTTOM
        )
        for i in range(1, frames)
    ]
    kwargs: dict[str, object] = {"save_all": frames > 1, "append_images": seq[1:], "duration": 90}
    if loop is not None:
        kwargs["loop"] = loop
    data = encode(seq[0], "GIF", **kwargs)
    at = data.index(b"\x2c")  # before the first image descriptor (after the colour table)
    ext = b""
    if comment:
        text = COMMENT.encode()
        ext += b"\x21\xfe" + bytes((len(text),)) + text + b"\x00"
    if plaintext:
        ext += b"\x21\x01\x0c" + bytes(12) + b"\x05" + b"Jane!" + b"\x00"
    if xmp:
        packet = xmp_packet()
        magic = bytes([1, *range(255, -1, -1)])  # the XMP "magic trailer"
        ext += b"\x21\xff\x0bXMP DataXMP" + packet + magic + b"\x00"
        ext += b"\x21\xff\x0bMYAPP1.0SN1" + bytes((len(SERIAL),)) + SERIAL.encode() + b"\x00"
    return data[:at] + ext + data[at:] + trailer


# --------------------------------------------------------------------------- TIFF
def tiff(
    *,
    pages: int = 2,
    orientation: int | None = None,
    metadata: bool = True,
    mode: str = "RGB",
    compression: str = "tiff_lzw",
) -> bytes:
    """A (multi-page) TIFF with descriptive tags, XMP, IPTC, a GPS IFD and GeoTIFF tags."""
    from PIL import TiffImagePlugin

    ims = [
        stored_for(
            picture(mode=mode) if mode in ("RGB", "RGBA") else picture().convert(mode),
            orientation or 1,
        )
    ]
    ims += [picture((32, 32)).convert(ims[0].mode).rotate(90 * i) for i in range(1, pages)]
    info = TiffImagePlugin.ImageFileDirectory_v2()
    if metadata:
        info[271] = "VeilCam"
        info[272] = "VeilCam V1"
        info[305] = "VeilOS 1.0"
        info[306] = "2024:05:06 07:08:09"
        info[315] = SECRET
        info[316] = "janes-laptop"
        info[33432] = "(c) " + SECRET
        info[270] = COMMENT
        info[700] = xmp_packet()
        info.tagtype[700] = 7
        info[33723] = iptc_iim()
        info.tagtype[33723] = 7
        info[33922] = (0.0, 0.0, 0.0, GPS[1], GPS[0], 0.0)  # GeoTIFF ModelTiepoint
        info.tagtype[33922] = 12
    if orientation is not None:
        info[274] = orientation
    kwargs: dict[str, object] = {"tiffinfo": info, "compression": compression}
    if pages > 1:
        kwargs.update(save_all=True, append_images=ims[1:])
    data = encode(ims[0], "TIFF", **kwargs)
    if metadata:
        data = _tiff_add_gps(data)
    return data


def _tiff_add_gps(data: bytes) -> bytes:
    """Append a GPS IFD to a little/big-endian TIFF and point IFD0 tag 34853 at it."""
    e = "<" if data[:2] == b"II" else ">"
    (ifd0,) = struct.unpack_from(e + "I", data, 4)
    (n,) = struct.unpack_from(e + "H", data, ifd0)
    entries = [data[ifd0 + 2 + 12 * i : ifd0 + 14 + 12 * i] for i in range(n)]
    (nxt,) = struct.unpack_from(e + "I", data, ifd0 + 2 + 12 * n)
    out = bytearray(data)
    if len(out) & 1:
        out += b"\x00"
    # GPS IFD: LatitudeRef, Latitude (3 rationals), LongitudeRef, Longitude
    vals_at = len(out) + 2 + 4 * 12 + 4
    lat = b"".join(struct.pack(e + "II", a, b) for a, b in _dms(GPS[0]))
    lon = b"".join(struct.pack(e + "II", a, b) for a, b in _dms(GPS[1]))
    gps_at = len(out)
    gps = struct.pack(e + "H", 4)
    gps += struct.pack(e + "HHI", 1, 2, 2) + b"N\x00\x00\x00"
    gps += struct.pack(e + "HHII", 2, 5, 3, vals_at)
    gps += struct.pack(e + "HHI", 3, 2, 2) + b"E\x00\x00\x00"
    gps += struct.pack(e + "HHII", 4, 5, 3, vals_at + 24)
    gps += b"\x00\x00\x00\x00" + lat + lon
    out += gps
    new_ifd = len(out)
    entries.append(struct.pack(e + "HHII", 34853, 4, 1, gps_at))
    entries.sort(key=lambda b: struct.unpack_from(e + "H", b)[0])
    out += struct.pack(e + "H", len(entries)) + b"".join(entries) + struct.pack(e + "I", nxt)
    struct.pack_into(e + "I", out, 4, new_ifd)
    return bytes(out)


# --------------------------------------------------------------------------- others
def bmp(*, mode: str = "RGB") -> bytes:
    return encode(picture(mode=mode), "BMP")


def heic(*, orientation: int | None = None, alpha: bool = False) -> bytes:
    import pillow_heif

    im = picture((64, 48), "RGBA" if alpha else "RGB")
    heif = pillow_heif.from_pillow(im)
    buf = io.BytesIO()
    heif.save(
        buf, quality=90, exif=b"Exif\x00\x00" + exif_tiff(orientation=orientation), xmp=xmp_packet()
    )
    return buf.getvalue()


def avif(*, frames: int = 1, alpha: bool = False) -> bytes:
    im = picture((64, 48), "RGBA" if alpha else "RGB")
    kwargs: dict[str, object] = {
        "exif": b"Exif\x00\x00" + exif_tiff(),
        "xmp": xmp_packet(),
        "quality": 90,
    }
    if frames > 1:
        kwargs.update(
            save_all=True, append_images=[im.rotate(30 * i) for i in range(1, frames)], duration=100
        )
    return encode(im, "AVIF", **kwargs)


def png16(*, orientation: int | None = None, alpha: bool = False) -> tuple[bytes, object]:
    """A 16-bit RGB(A) PNG written by hand (Pillow cannot write one), plus its upright pixels
    as a numpy array (height, width, channels) of uint16."""
    import numpy as np

    up = np.asarray(picture((40, 24)), dtype=np.uint16) * 257
    up[..., 0] += np.arange(up.shape[1], dtype=np.uint16)[None, :]  # low bits that 8-bit loses
    if alpha:
        up = np.dstack([up, np.full(up.shape[:2], 40000, np.uint16)])
    turn = {  # the inverse of each orientation
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.swapaxes(0, 1),
        6: lambda a: np.rot90(a, k=1),
        7: lambda a: a.swapaxes(0, 1)[::-1, ::-1],
        8: lambda a: np.rot90(a, k=-1),
    }
    stored = np.ascontiguousarray(turn[orientation](up) if orientation in turn else up)
    h, w = stored.shape[:2]
    rows = b"".join(b"\x00" + stored[y].astype(">u2").tobytes() for y in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, 16, 6 if alpha else 2, 0, 0, 0)
    chunks = [png_chunk(b"IHDR", ihdr)]
    if orientation is not None:
        chunks.append(png_chunk(b"eXIf", exif_tiff(orientation=orientation, thumbnail=False)))
    chunks += [
        png_chunk(b"tEXt", b"Author\x00" + SECRET.encode()),
        png_chunk(b"IDAT", zlib.compress(rows)),
        png_chunk(b"IEND", b""),
    ]
    return b"\x89PNG\r\n\x1a\n" + b"".join(chunks), up


def tiff_file(tags: dict[int, tuple[int, int, bytes]], strip: bytes) -> bytes:
    """A little-endian classic TIFF with one page: ``tags`` (tag -> type, count, value bytes)
    plus the strip tags for ``strip``."""
    head = 8
    strip_at = head
    body = bytearray(strip)
    if len(body) & 1:
        body += b"\x00"
    tags = dict(tags)
    tags[273] = (4, 1, struct.pack("<I", strip_at))
    tags[279] = (4, 1, struct.pack("<I", len(strip)))
    out_of_line = bytearray()
    placed: dict[int, int] = {}
    base = head + len(body)
    for tag, (_t, _c, raw) in sorted(tags.items()):
        if len(raw) > 4:
            placed[tag] = base + len(out_of_line)
            out_of_line += raw + (b"\x00" if len(raw) & 1 else b"")
    ifd_at = base + len(out_of_line)
    ifd = struct.pack("<H", len(tags))
    for tag, (typ, count, raw) in sorted(tags.items()):
        field = struct.pack("<I", placed[tag]) if tag in placed else raw.ljust(4, b"\x00")
        ifd += struct.pack("<HHI", tag, typ, count) + field
    ifd += b"\x00\x00\x00\x00"
    return b"II*\x00" + struct.pack("<I", ifd_at) + bytes(body) + bytes(out_of_line) + ifd


def rgb_tags(w: int, h: int, compression: int = 1) -> dict[int, tuple[int, int, bytes]]:
    return {
        256: (3, 1, struct.pack("<H", w)),
        257: (3, 1, struct.pack("<H", h)),
        258: (3, 3, struct.pack("<3H", 8, 8, 8)),
        259: (3, 1, struct.pack("<H", compression)),
        262: (3, 1, struct.pack("<H", 2)),
        277: (3, 1, struct.pack("<H", 3)),
        278: (3, 1, struct.pack("<H", h)),
        282: (5, 1, struct.pack("<II", 72, 1)),
        283: (5, 1, struct.pack("<II", 72, 1)),
        296: (3, 1, struct.pack("<H", 2)),
    }


def rgb_rows(w: int = 24, h: int = 16) -> bytes:
    return np.asarray(noise((w, h))).tobytes()


def noise(size: tuple[int, int] = (96, 64), seed: int = 3) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
