//! Counts the entries of every tree of a gateway's sled store, for `bench/queued.sh` (see
//! `bench/README.md`): whether delivered events were pruned (`deliveries`, `deliveries_due`)
//! and how many dedupe keys are remembered (`delivery_dedupe`, `delivery_dedupe_by_expiry`).
//! The gateway must be stopped (sled allows one process per folder).
//!
//! ```text
//! cargo run --release --example sled_trees -- /tmp/gw/store
//! ```
//!
//! Prints `TREE name=… entries=… key_bytes=… value_bytes=…` per tree and `SIZE
//! size_on_disk=…` (sled's own figure).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .ok_or("usage: sled_trees STORE_FOLDER")?;
    let db = sled::Config::new().path(&path).open()?;
    for name in db.tree_names() {
        let tree = db.open_tree(&name)?;
        let (mut n, mut kb, mut vb) = (0u64, 0u64, 0u64);
        for kv in tree.iter() {
            let (k, v) = kv?;
            n += 1;
            kb += k.len() as u64;
            vb += v.len() as u64;
        }
        println!(
            "TREE name={} entries={n} key_bytes={kb} value_bytes={vb}",
            String::from_utf8_lossy(&name)
        );
    }
    println!("SIZE size_on_disk={}", db.size_on_disk()?);
    Ok(())
}
