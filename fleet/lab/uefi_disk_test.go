package lab

import (
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf16"
)

// efiMarkerApp returns a minimal x86-64 UEFI application (PE32+) that
// prints marker on the firmware's console (OVMF copies it to the serial
// port) and then halts: the UEFI counterpart of diskBootSector. It needs
// no relocations (its code is RIP-relative) and no signature (the lab's
// OVMF has Secure Boot off).
func efiMarkerApp(marker string) []byte {
	const (
		headerSize = 0x200  // headers, padded to the file alignment
		textRVA    = 0x1000 // the one section, at the section alignment
		strOffset  = 32     // the UTF-16 string, after the code
	)
	code := []byte{
		0x48, 0x83, 0xEC, 0x28, // sub rsp, 40 (shadow space; aligns rsp)
		0x48, 0x8B, 0x4A, 0x40, // mov rcx, [rdx+64]: SystemTable->ConOut
		0x48, 0x8D, 0x15, strOffset - 15, 0, 0, 0, // lea rdx, [rip+…]: the string
		0xFF, 0x51, 0x08, // call [rcx+8]: ConOut->OutputString(ConOut, string)
		0xF4,       // hlt
		0xEB, 0xFD, // jmp hlt
	}
	text := make([]byte, 0x200)
	copy(text, code)
	for i, u := range utf16.Encode([]rune("\r\n" + marker + "\r\n\x00")) {
		binary.LittleEndian.PutUint16(text[strOffset+2*i:], u)
	}

	img := make([]byte, headerSize+len(text))
	le := binary.LittleEndian
	copy(img, "MZ")
	le.PutUint32(img[0x3C:], 0x40) // e_lfanew
	pe := img[0x40:]
	copy(pe, "PE\x00\x00")
	coff := pe[4:]
	le.PutUint16(coff[0:], 0x8664) // x86-64
	le.PutUint16(coff[2:], 1)      // sections
	le.PutUint16(coff[16:], 240)   // optional header size
	le.PutUint16(coff[18:], 0x22)  // executable, large-address aware; relocations not stripped
	opt := coff[20:]
	le.PutUint16(opt[0:], 0x20B) // PE32+
	le.PutUint32(opt[4:], uint32(len(text)))
	le.PutUint32(opt[16:], textRVA) // entry point
	le.PutUint32(opt[20:], textRVA) // base of code
	le.PutUint64(opt[24:], 0x10000000)
	le.PutUint32(opt[32:], 0x1000) // section alignment
	le.PutUint32(opt[36:], 0x200)  // file alignment
	le.PutUint32(opt[56:], textRVA+0x1000)
	le.PutUint32(opt[60:], headerSize)
	le.PutUint16(opt[68:], 10) // EFI application
	le.PutUint32(opt[108:], 16)
	sec := opt[240:]
	copy(sec, ".text")
	le.PutUint32(sec[8:], uint32(len(text)))
	le.PutUint32(sec[12:], textRVA)
	le.PutUint32(sec[16:], uint32(len(text)))
	le.PutUint32(sec[20:], headerSize)
	le.PutUint32(sec[36:], 0x60000020) // code, execute, read
	copy(img[headerSize:], text)
	return img
}

// uefiDiskImage returns a raw disk image that UEFI firmware boots: a GPT
// whose one partition is an EFI system partition (FAT) holding
// efiMarkerApp(marker) at the removable-media path \EFI\BOOT\BOOTX64.EFI,
// the path firmware tries on a disk it has no boot entry for. The
// partition table and file system are made by the real tools (fdisk's
// sfdisk, dosfstools, mtools), as an image build would.
func uefiDiskImage(t *testing.T, dir, name, marker string) []byte {
	t.Helper()
	run := func(name string, stdin string, args ...string) {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Stdin = strings.NewReader(stdin)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
	}
	app := filepath.Join(dir, name+".efi")
	if err := os.WriteFile(app, efiMarkerApp(marker), 0o644); err != nil {
		t.Fatal(err)
	}
	const (
		espStart = 1 << 20 // bytes; partitions start 1 MiB in
		espSize  = 2 << 20
		imgSize  = espStart + espSize + 1<<20 // room for the backup GPT
	)
	esp := filepath.Join(dir, name+".esp")
	os.Remove(esp)                                                   // mkfs.fat -C refuses an existing file
	run("mkfs.fat", "", "-C", esp, "-n", "PHOENIXESP", "--", "2048") // KiB
	run("mmd", "", "-i", esp, "::/EFI", "::/EFI/BOOT")
	run("mcopy", "", "-i", esp, app, "::/EFI/BOOT/BOOTX64.EFI")

	disk := filepath.Join(dir, name+".raw")
	if err := os.WriteFile(disk, make([]byte, imgSize), 0o644); err != nil {
		t.Fatal(err)
	}
	run("sfdisk", "label: gpt\nstart=2048, size=4096, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=ESP\n",
		"--no-reread", "--no-tell-kernel", "--quiet", disk)
	img, err := os.ReadFile(disk)
	if err != nil {
		t.Fatal(err)
	}
	fat, err := os.ReadFile(esp)
	if err != nil {
		t.Fatal(err)
	}
	copy(img[espStart:espStart+espSize], fat)
	if err := os.WriteFile(disk, img, 0o644); err != nil {
		t.Fatal(err)
	}
	return img
}
