//! The pause image: what holds an `awsvpc` task's network namespace.
//!
//! Berth pulls nothing from the internet, so the agent makes the image itself: [`image_tar`] is
//! a one-file root filesystem holding [`ELF`] as `/pause`, imported into Docker as [`IMAGE`].
//! [`ELF`] is a static x86_64 Linux executable written out byte by byte: it installs a
//! SIGTERM/SIGINT handler that exits (PID 1 in a container ignores signals it has no handler
//! for, so `docker stop` would otherwise wait for SIGKILL), then sleeps in `pause(2)` forever.
//! Only x86_64: elsewhere the agent does not advertise `awsvpc` (see
//! [`crate::awsvpc_supported`]).

/// The image the agent imports and runs as every `awsvpc` task's pause container.
pub const IMAGE: &str = "berth/pause:1";
/// [`IMAGE`] as `docker import` names it: repository and tag.
pub const REPO: &str = "berth/pause";
pub const TAG: &str = "1";
/// Where the executable is in the image, and the pause container's command.
pub const PATH: &str = "/pause";

/// The pause executable. Offsets on the left.
#[rustfmt::skip]
pub const ELF: [u8; 0xd8] = [
    // 0x00 ELF header: magic, 64-bit, little endian, version 1, System V ABI, padding.
    0x7f, 0x45, 0x4c, 0x46, 0x02, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    // 0x10 e_type EXEC, e_machine x86-64, e_version 1.
    0x02, 0x00, 0x3e, 0x00, 0x01, 0x00, 0x00, 0x00,
    // 0x18 e_entry 0x400078.
    0x78, 0x00, 0x40, 0x00, 0x00, 0x00, 0x00, 0x00,
    // 0x20 e_phoff 64.
    0x40, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    // 0x28 e_shoff 0 (no sections).
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    // 0x30 e_flags 0, e_ehsize 64, e_phentsize 56, e_phnum 1, e_shentsize 64, e_shnum 0,
    // e_shstrndx 0.
    0x00, 0x00, 0x00, 0x00, 0x40, 0x00, 0x38, 0x00, 0x01, 0x00, 0x40, 0x00, 0x00, 0x00, 0x00, 0x00,
    // 0x40 Program header: p_type PT_LOAD, p_flags R+X.
    0x01, 0x00, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00,
    // 0x48 p_offset 0.
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    // 0x50 p_vaddr, p_paddr 0x400000.
    0x00, 0x00, 0x40, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x40, 0x00, 0x00, 0x00, 0x00, 0x00,
    // 0x60 p_filesz, p_memsz 0xd8 (the whole file).
    0xd8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xd8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    // 0x70 p_align 0x1000.
    0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    // 0x78 mov eax, 13 (rt_sigaction); mov edi, 15 (SIGTERM)
    0xb8, 0x0d, 0x00, 0x00, 0x00, 0xbf, 0x0f, 0x00, 0x00, 0x00,
    // 0x82 lea rsi, [rip + 0x2f] (the sigaction at 0xb8); xor edx, edx (no old action)
    0x48, 0x8d, 0x35, 0x2f, 0x00, 0x00, 0x00, 0x31, 0xd2,
    // 0x8b mov r10d, 8 (sigset size); syscall
    0x41, 0xba, 0x08, 0x00, 0x00, 0x00, 0x0f, 0x05,
    // 0x93 mov eax, 13; mov edi, 2 (SIGINT); syscall (rsi, rdx, r10 survive a syscall)
    0xb8, 0x0d, 0x00, 0x00, 0x00, 0xbf, 0x02, 0x00, 0x00, 0x00, 0x0f, 0x05,
    // 0x9f loop: mov eax, 34 (pause); syscall; jmp loop
    0xb8, 0x22, 0x00, 0x00, 0x00, 0x0f, 0x05, 0xeb, 0xf7,
    // 0xa8 exit: xor edi, edi; mov eax, 60 (exit); syscall
    0x31, 0xff, 0xb8, 0x3c, 0x00, 0x00, 0x00, 0x0f, 0x05,
    // 0xb1 padding to 8 bytes.
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    // 0xb8 struct sigaction: sa_handler 0x4000a8 (exit); sa_flags SA_RESTORER (x86_64's
    // kernel will not deliver a signal without one); sa_restorer 0x4000a8 too (never reached:
    // the handler does not return); sa_mask empty.
    0xa8, 0x00, 0x40, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00,
    0xa8, 0x00, 0x40, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
];

/// Writes `value` as zero-padded octal digits and a NUL into `field`, as tar does.
fn octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let text = format!("{value:0digits$o}");
    field[..digits].copy_from_slice(text.as_bytes());
    field[digits] = 0;
}

/// A ustar archive holding one regular file, `/pause`, mode 0755, owned by root: the image's
/// whole root filesystem, for `docker import`. Pure.
pub fn image_tar() -> Vec<u8> {
    let mut h = [0u8; 512];
    let name = PATH.trim_start_matches('/').as_bytes();
    h[..name.len()].copy_from_slice(name);
    octal(&mut h[100..108], 0o755); // mode
    octal(&mut h[108..116], 0); // uid
    octal(&mut h[116..124], 0); // gid
    octal(&mut h[124..136], ELF.len() as u64); // size
    octal(&mut h[136..148], 0); // mtime
    h[156] = b'0'; // a regular file
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[265..269].copy_from_slice(b"root");
    h[297..301].copy_from_slice(b"root");
    // The checksum is the sum of the header's bytes with its own field read as spaces.
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    octal(&mut h[148..155], u64::from(sum));
    h[155] = b' ';
    let mut tar = h.to_vec();
    tar.extend_from_slice(&ELF);
    tar.resize(tar.len().next_multiple_of(512), 0);
    // The end of the archive: two zero blocks.
    tar.resize(tar.len() + 1024, 0);
    tar
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where the one loadable segment (the whole file) is mapped.
    const BASE: u64 = 0x40_0000;
    /// The code starts right after the ELF header (64 bytes) and the program header (56).
    const CODE: usize = 0x78;
    /// The exit code, the signal handler.
    const EXIT: usize = 0xa8;
    /// The `struct sigaction` the code hands to `rt_sigaction`.
    const SIGACTION: usize = 0xb8;

    fn u16_at(b: &[u8], at: usize) -> u16 {
        u16::from_le_bytes([b[at], b[at + 1]])
    }

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }

    fn u64_at(b: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
    }

    #[test]
    fn the_executable_is_a_static_x86_64_elf_with_one_loadable_segment() {
        let e = &ELF;
        assert_eq!(&e[..4], b"\x7fELF");
        assert_eq!(
            (e[4], e[5], e[6]),
            (2, 1, 1),
            "64-bit, little endian, version 1"
        );
        assert_eq!(u16_at(e, 0x10), 2, "an executable");
        assert_eq!(u16_at(e, 0x12), 0x3e, "x86-64");
        assert_eq!(u64_at(e, 0x18), BASE + CODE as u64, "entry at the code");
        assert_eq!(
            u64_at(e, 0x20),
            64,
            "program header right after the ELF header"
        );
        assert_eq!(
            (u16_at(e, 0x34), u16_at(e, 0x36), u16_at(e, 0x38)),
            (64, 56, 1)
        );
        // The segment maps the whole file, readable and executable.
        assert_eq!(u32_at(e, 0x40), 1, "PT_LOAD");
        assert_eq!(u32_at(e, 0x44), 5, "R+X");
        assert_eq!(u64_at(e, 0x48), 0);
        assert_eq!((u64_at(e, 0x50), u64_at(e, 0x58)), (BASE, BASE));
        assert_eq!(u64_at(e, 0x60), e.len() as u64);
        assert_eq!(u64_at(e, 0x68), e.len() as u64);
        assert_eq!(u64_at(e, 0x70), 0x1000);
        // The code: rt_sigaction's struct is where `lea` points, its handler is the exit.
        assert_eq!(&e[CODE..CODE + 5], [0xb8, 13, 0, 0, 0]);
        let lea_next = 0x89;
        assert_eq!(lea_next + u32_at(e, 0x85) as usize, SIGACTION);
        assert_eq!(u64_at(e, SIGACTION), BASE + EXIT as u64);
        assert_eq!(u64_at(e, SIGACTION + 8), 0x0400_0000, "SA_RESTORER");
        assert_eq!(u64_at(e, SIGACTION + 16), BASE + EXIT as u64);
        assert_eq!(
            &e[EXIT..EXIT + 9],
            [0x31, 0xff, 0xb8, 60, 0, 0, 0, 0x0f, 0x05]
        );
        // The loop: pause (34), then back 9 bytes to the `mov`.
        assert_eq!(&e[0x9f..0xa8], [0xb8, 34, 0, 0, 0, 0x0f, 0x05, 0xeb, 0xf7]);
        assert_eq!(SIGACTION + 32, e.len());
    }

    #[test]
    fn the_image_tar_holds_the_executable_in_ustar_blocks() {
        let tar = image_tar();
        assert_eq!(
            tar.len(),
            512 + 512 + 1024,
            "header, one content block, end"
        );
        assert_eq!(tar.len() % 512, 0);
        let h = &tar[..512];
        assert_eq!(&h[..6], b"pause\0");
        assert_eq!(&h[100..108], b"0000755\0");
        assert_eq!(&h[124..136], format!("{:011o}\0", ELF.len()).as_bytes());
        assert_eq!(h[156], b'0');
        assert_eq!(&h[257..265], b"ustar\x0000");
        let mut blank = h.to_vec();
        blank[148..156].copy_from_slice(b"        ");
        let sum: u32 = blank.iter().map(|b| u32::from(*b)).sum();
        assert_eq!(&h[148..156], format!("{sum:06o}\0 ").as_bytes());
        assert_eq!(&tar[512..512 + ELF.len()], &ELF[..]);
        assert!(tar[512 + ELF.len()..].iter().all(|b| *b == 0));
    }
}
