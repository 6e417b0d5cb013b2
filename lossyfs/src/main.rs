//! `lossyfs BACKING MOUNTPOINT`: mounts lossyfs and takes commands on standard input, one
//! a line — `cut` (the power cut), `sync` (everything durable), `stats` — until `quit` or
//! the end of input, then unmounts, leaving the durable state in BACKING.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let [_, backing, mountpoint] = args.as_slice() else {
        eprintln!("usage: lossyfs BACKING MOUNTPOINT   (then on stdin: cut | sync | stats | quit)");
        return ExitCode::from(2);
    };
    let mount = match lossyfs::Mount::new(&PathBuf::from(mountpoint), &PathBuf::from(backing)) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("lossyfs: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("mounted {mountpoint} over {backing}");
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        match line.trim() {
            "cut" => match mount.cut_power() {
                Ok(s) => println!("power cut: {} inodes lost or rolled back", s.last_cut_dropped),
                Err(e) => eprintln!("lossyfs: {e}"),
            },
            "sync" => {
                mount.sync_everything();
                println!("everything durable");
            }
            "stats" => println!("{:?}", mount.stats()),
            "quit" => break,
            "" => {}
            other => eprintln!("lossyfs: unknown command {other:?} (cut | sync | stats | quit)"),
        }
    }
    match mount.unmount() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lossyfs: {e}");
            ExitCode::FAILURE
        }
    }
}
