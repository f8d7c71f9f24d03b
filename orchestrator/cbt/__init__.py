"""Changed-block tracking core: turns block devices and byte streams into vault chunks, and back."""
