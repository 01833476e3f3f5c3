//! The fuzz targets' checked-in corpus (`fuzz/corpus/<target>/`), replayed
//! through the same entry points `scripts/fuzz` drives, plus simple
//! mutations of each input. A crash once found by fuzzing stays fixed.

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let mut inputs = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        run(&data);
        // Every prefix, and every single-byte change to a few hostile bytes.
        for end in 0..data.len() {
            run(&data[..end]);
        }
        for i in 0..data.len() {
            for byte in [b'/', b'.', b'%', b'\\', 0, b';', b':', b'\n', 0xff] {
                let mut mutated = data.clone();
                mutated[i] = byte;
                run(&mutated);
            }
        }
        inputs += 1;
    }
    assert!(inputs > 0, "empty corpus for {target}");
}

#[test]
fn credentials_corpus() {
    replay("credentials", gatehouse::fuzz::credentials);
}

#[test]
fn jwt_corpus() {
    replay("jwt", gatehouse::fuzz::jwt);
}

#[test]
fn path_corpus() {
    replay("path", gatehouse::fuzz::path);
}
