//! Little-endian field access for on-disk records. Readers return `None` past the end, so
//! parsing untrusted sectors can never panic.

pub struct Writer<'a> {
    buf: &'a mut [u8],
    at: usize,
}

impl<'a> Writer<'a> {
    pub fn new(buf: &'a mut [u8]) -> Self {
        Writer { buf, at: 0 }
    }
    pub fn u16(&mut self, value: u16) {
        self.bytes(&value.to_le_bytes());
    }
    pub fn u32(&mut self, value: u32) {
        self.bytes(&value.to_le_bytes());
    }
    pub fn u64(&mut self, value: u64) {
        self.bytes(&value.to_le_bytes());
    }
    pub fn bytes(&mut self, data: &[u8]) {
        self.buf[self.at..self.at + data.len()].copy_from_slice(data);
        self.at += data.len();
    }
    pub fn position(&self) -> usize {
        self.at
    }
}

pub struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, at: 0 }
    }
    pub fn bytes(&mut self, len: usize) -> Option<&'a [u8]> {
        let slice = self.buf.get(self.at..self.at.checked_add(len)?)?;
        self.at += len;
        Some(slice)
    }
    pub fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.bytes(2)?.try_into().ok()?))
    }
    pub fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.bytes(4)?.try_into().ok()?))
    }
    pub fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.bytes(8)?.try_into().ok()?))
    }
}

/// crc32c of `sector[..len-4]`, stored in the sector's last 4 bytes.
pub fn seal_sector(sector: &mut [u8]) {
    let end = sector.len() - 4;
    let crc = crc32c::crc32c(&sector[..end]);
    sector[end..].copy_from_slice(&crc.to_le_bytes());
}

/// Whether a sector sealed by [`seal_sector`] is intact.
pub fn sector_is_sealed(sector: &[u8]) -> bool {
    if sector.len() < 4 {
        return false;
    }
    let end = sector.len() - 4;
    let stored = u32::from_le_bytes([
        sector[end],
        sector[end + 1],
        sector[end + 2],
        sector[end + 3],
    ]);
    crc32c::crc32c(&sector[..end]) == stored
}

pub fn is_all_zero(data: &[u8]) -> bool {
    data.iter().all(|b| *b == 0)
}
