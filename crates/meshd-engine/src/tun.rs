//! The TUN device of one network, and batched reads and writes on it.
//!
//! Layer 3, no packet-information header, one queue per packet worker (IFF_MULTI_QUEUE when
//! there are several: the kernel keeps each flow on one queue, and sends a flow's outgoing
//! packets to the queue its incoming ones were written to). When the kernel allows it the device has
//! virtio-net headers with TSO (and USO on Linux ≥ 6.2) offloads: one read then returns up to
//! 64 KB of one TCP or UDP flow, which [`Reader`] splits into packets of at most the MTU, and
//! [`Writer`] coalesces the packets of one flow back into one write (GRO). Where the kernel
//! refuses offloads the device is opened without them, and the same types move one packet per
//! read and per write.
//!
//! The device is not persistent: closing the last descriptor removes the link with its
//! addresses and routes, so a crashed node leaves nothing behind.

use std::io;
use std::time::{Duration, Instant};

use tun_rs::{DeviceBuilder, GROTable, IDEAL_BATCH_SIZE, Layer, SyncDevice, VIRTIO_NET_HDR_LEN};

use crate::EngineError;
use crate::plan::MAX_INTERFACE_NAME;

/// Packet slots of one [`Reader`] batch.
pub const READ_SLOTS: usize = 128;
/// A batch reads on while at least this many slots are free: room for a whole 64 KB TCP
/// super-packet of 1024-byte segments (the first read of a batch has all [`READ_SLOTS`]).
const REFILL_SLOTS: usize = 64;
/// Packets one [`Writer`] batch holds: tun-rs's GRO tables are sized for this many.
pub const WRITE_BATCH: usize = IDEAL_BATCH_SIZE;
/// A gap between batches longer than this, and the traffic is not a stream: see
/// [`Reader::read`].
const QUIET: Duration = Duration::from_micros(100);
/// The largest read: a virtio-net header and an IP packet of up to 64 KB.
const MAX_READ: usize = VIRTIO_NET_HDR_LEN + 65_535;

/// Creates the TUN `name` with `mtu` and `queues` queues (at least one) and brings it up,
/// every queue non-blocking, with offloads if the kernel accepts them (logged once if not).
/// It must run on a thread in the network namespace the device belongs in.
pub fn open(name: &str, mtu: u16, queues: usize) -> Result<Vec<SyncDevice>, EngineError> {
    let fail = |source| EngineError::Tun {
        name: name.to_owned(),
        source,
    };
    if name.is_empty() || name.len() > MAX_INTERFACE_NAME {
        return Err(fail(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("interface names have 1 to {MAX_INTERFACE_NAME} bytes"),
        )));
    }
    let multi_queue = queues > 1;
    let device = match build(name, mtu, true, multi_queue) {
        Ok(device) => device,
        Err(refused) => {
            // Without IFF_VNET_HDR/TUNSETOFFLOAD (an old kernel, a seccomp filter) the device
            // still works, one packet per read and per write. Any other problem fails again.
            let device = build(name, mtu, false, multi_queue).map_err(fail)?;
            tracing::warn!(interface = %name, error = %refused,
                "TUN offloads refused; this network moves one packet per TUN read and write");
            device
        }
    };
    tracing::debug!(interface = %name, tcp = device.tcp_gso(), udp = device.udp_gso(),
        queues, "TUN offloads");
    let mut all = Vec::with_capacity(queues);
    all.push(device);
    while all.len() < queues {
        // Each further queue is a descriptor attached to the same link, with its offloads.
        let queue = all[0].try_clone().map_err(fail)?;
        queue.set_nonblocking(true).map_err(fail)?;
        all.push(queue);
    }
    Ok(all)
}

fn build(name: &str, mtu: u16, offload: bool, multi_queue: bool) -> io::Result<SyncDevice> {
    let device = DeviceBuilder::new()
        .name(name)
        .layer(Layer::L3)
        .packet_information(false)
        .offload(offload)
        .multi_queue(multi_queue)
        .mtu(mtu)
        .enable(true)
        .build_sync()?;
    device.set_nonblocking(true)?;
    Ok(device)
}

/// Batched TUN reads into fixed slots of one contiguous buffer.
///
/// Each packet lands at `headroom` in its slot and leaves `tailroom` free after it, so a
/// caller can frame and seal it where it lies. The slots are `headroom + mtu + tailroom`
/// bytes, so the datagrams sealed from full-sized packets lie back to back and go out as one
/// segmented send without a copy.
#[derive(Debug)]
pub struct Reader {
    /// One read from the device: the virtio-net header and a packet or super-packet.
    raw: Vec<u8>,
    /// [`READ_SLOTS`] slots of `slot_len` bytes.
    slots: Vec<u8>,
    slot_len: usize,
    headroom: usize,
    tailroom: usize,
    mtu: u16,
    sizes: [usize; READ_SLOTS],
    /// Packets in the current batch.
    len: usize,
    /// When the previous batch was read.
    previous: Option<Instant>,
}

/// What one [`Reader::read`] got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Read {
    /// Packets now in the slots.
    pub packets: usize,
    /// Reads that could not be split into packets (a bad virtio-net header or GSO packet, or
    /// more segments than free slots): dropped.
    pub malformed: u64,
}

impl Reader {
    pub fn new(headroom: usize, tailroom: usize, mtu: u16) -> Self {
        let mut reader = Self {
            raw: vec![0; MAX_READ],
            slots: Vec::new(),
            slot_len: 0,
            headroom,
            tailroom,
            mtu: 0,
            sizes: [0; READ_SLOTS],
            len: 0,
            previous: None,
        };
        reader.set_mtu(mtu);
        reader
    }

    /// Resizes the slots for a new device MTU (a no-op when it did not change).
    pub fn set_mtu(&mut self, mtu: u16) {
        if mtu == self.mtu {
            return;
        }
        self.mtu = mtu;
        self.slot_len = self.headroom + usize::from(mtu) + self.tailroom;
        self.slots = vec![0; READ_SLOTS * self.slot_len];
        self.len = 0;
    }

    /// Reads what the device has queued while at least `REFILL_SLOTS` (64) slots are free
    /// (nothing queued: `packets` is 0). Replaces the previous batch.
    ///
    /// A lone packet after a quiet spell (a ping, a request: traffic that waits for its
    /// answer) is returned at once: reading on would only find the queue empty, one system
    /// call later on that packet's way out. Under load batches follow each other closely,
    /// and each reads on. An error is the device's own (it was deleted, the descriptor broke):
    /// nothing more will come.
    pub fn read(&mut self, device: &SyncDevice) -> io::Result<Read> {
        let Self {
            raw,
            slots,
            slot_len,
            headroom,
            sizes,
            len,
            previous,
            ..
        } = self;
        let mut chunks = slots.chunks_mut(*slot_len);
        let mut bufs: [&mut [u8]; READ_SLOTS] =
            std::array::from_fn(|_| chunks.next().unwrap_or_default());
        *len = 0;
        let mut malformed = 0;
        while *len == 0 {
            match device.recv_multiple(raw, &mut bufs, sizes, *headroom) {
                Ok(n) => *len = n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Ok(Read {
                        packets: 0,
                        malformed,
                    });
                }
                Err(e) => malformed += unsplittable(e)?,
            }
        }
        let now = Instant::now();
        let quiet = previous.is_none_or(|at| now.duration_since(at) > QUIET);
        *previous = Some(now);
        let lone = *len == 1 && quiet;
        while !lone && READ_SLOTS - *len >= REFILL_SLOTS {
            let at = *len;
            match device.recv_multiple(raw, &mut bufs[at..], &mut sizes[at..], *headroom) {
                Ok(n) => *len += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => malformed += unsplittable(e)?,
            }
        }
        Ok(Read {
            packets: *len,
            malformed,
        })
    }

    /// The slot length: packet `i` of the batch starts at `i * slot_len() + headroom`.
    pub fn slot_len(&self) -> usize {
        self.slot_len
    }

    /// Each packet of the batch with its slot: `(slot, packet length)`.
    pub fn packets_mut(&mut self) -> impl Iterator<Item = (&mut [u8], usize)> {
        self.slots
            .chunks_mut(self.slot_len)
            .zip(self.sizes.iter().copied())
            .take(self.len)
    }

    /// The whole slot buffer (for sending sealed slots; see [`Reader::slot_len`]).
    pub fn slots_mut(&mut self) -> &mut [u8] {
        &mut self.slots
    }
}

/// Sorts a failed read: the device's own errors (with an OS error code) end the reading, an
/// error of splitting what was read (tun-rs's own, without one) drops that read only.
fn unsplittable(e: io::Error) -> io::Result<u64> {
    match e.raw_os_error() {
        // EAGAIN never gets here: `Reader::read` takes it as "nothing queued" first.
        Some(code) if code == libc::EINTR => Ok(0),
        Some(_) => Err(e),
        None => Ok(1),
    }
}

/// Batched TUN writes: packets are copied in with [`Writer::push`] and written by
/// [`Writer::flush`], which coalesces consecutive segments of one TCP or UDP flow into one
/// write when the device has offloads.
#[derive(Debug)]
pub struct Writer {
    /// Each buffer: virtio-net header room, then one packet. Allocated on first use with room
    /// for a 64 KB coalesced packet, then reused.
    bufs: Vec<Vec<u8>>,
    len: usize,
    gro: GroTable,
}

/// tun-rs's GRO table, which has no `Debug`.
struct GroTable(GROTable);

impl std::fmt::Debug for GroTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GROTable")
    }
}

impl Default for Writer {
    fn default() -> Self {
        Self {
            bufs: Vec::with_capacity(WRITE_BATCH),
            len: 0,
            gro: GroTable(GROTable::default()),
        }
    }
}

impl Writer {
    /// Whether the batch is full: [`Writer::flush`] before the next push.
    pub fn is_full(&self) -> bool {
        self.len >= WRITE_BATCH
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies `packet` into the batch. A push into a full batch grows it past
    /// [`WRITE_BATCH`]; callers flush first.
    pub fn push(&mut self, packet: &[u8]) {
        if self.len == self.bufs.len() {
            // tun-rs coalesces into a buffer only while its capacity allows, without
            // reallocating: twice the header room plus the largest packet.
            self.bufs
                .push(Vec::with_capacity(2 * VIRTIO_NET_HDR_LEN + 65_535));
        }
        let buf = &mut self.bufs[self.len];
        buf.clear();
        buf.resize(VIRTIO_NET_HDR_LEN, 0);
        buf.extend_from_slice(packet);
        self.len += 1;
    }

    /// Writes the batch and empties it. On an error some packets may not have been written.
    pub fn flush(&mut self, device: &SyncDevice) -> io::Result<()> {
        if self.len == 0 {
            return Ok(());
        }
        let bufs = &mut self.bufs[..self.len];
        self.len = 0;
        device
            .send_multiple(&mut self.gro.0, bufs, VIRTIO_NET_HDR_LEN)
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_errors_end_reading_and_split_errors_drop_one_read() {
        let gone = io::Error::from_raw_os_error(libc::EBADFD);
        assert!(unsplittable(gone).is_err());
        assert_eq!(
            unsplittable(io::Error::from_raw_os_error(libc::EINTR)).ok(),
            Some(0)
        );
        let split = io::Error::new(io::ErrorKind::InvalidInput, "too many GSO segments");
        assert_eq!(unsplittable(split).ok(), Some(1));
        assert_eq!(
            unsplittable(io::Error::other("packet is too short")).ok(),
            Some(1)
        );
    }

    #[test]
    fn slots_follow_the_mtu() {
        let mut reader = Reader::new(16, 16, 1420);
        assert_eq!(reader.slot_len(), 1452);
        assert_eq!(reader.slots_mut().len(), READ_SLOTS * 1452);
        reader.set_mtu(1280);
        assert_eq!(reader.slot_len(), 1312);
        assert_eq!(reader.packets_mut().count(), 0);
    }

    #[test]
    fn a_writer_reuses_its_buffers() {
        let mut writer = Writer::default();
        assert!(writer.is_empty());
        for i in 0..WRITE_BATCH {
            assert!(!writer.is_full());
            writer.push(&[i as u8; 60]);
        }
        assert!(writer.is_full());
        assert_eq!(writer.bufs[7].len(), VIRTIO_NET_HDR_LEN + 60);
        assert_eq!(writer.bufs[7][VIRTIO_NET_HDR_LEN], 7);
        writer.len = 0;
        writer.push(&[1; 20]);
        assert_eq!(writer.bufs.len(), WRITE_BATCH);
        assert_eq!(writer.bufs[0].len(), VIRTIO_NET_HDR_LEN + 20);
    }
}
