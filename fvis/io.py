"""Old import path, kept as a thin re-export: use :mod:`fvis.files` (``fvis.io`` shadowed the
standard library's ``io``)."""
from .files import (IMAGE_SUFFIXES, atomic_write, check_writable, contact_sheet, list_images,  # noqa: F401
                    load_image, save_image, to_uint8, versions, write_json)

_atomic_write = atomic_write  # the old private name, still imported by fvis.evaluate and fvis.reference
