use super::*;
use std::net::TcpListener;
use std::time::Instant;

/// A port free on 127.0.0.1 right now.
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn launch(rank: usize, world: usize, port: u16) -> Launch {
    Launch::local(rank, world, port)
}

/// Runs `f` on `world` ranks, one thread each, connected through one store.
fn on_ranks<T: Send + 'static>(
    world: usize,
    f: impl Fn(ProcessGroup) -> T + Send + Sync + Clone + 'static,
) -> Vec<T> {
    let port = free_port();
    let handles: Vec<_> = (0..world)
        .map(|r| {
            let f = f.clone();
            std::thread::spawn(move || {
                let g = ProcessGroup::connect(&launch(r, world, port), Duration::from_secs(30))
                    .unwrap();
                f(g)
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

#[test]
fn every_collective_gnmt_uses_works_between_ranks() {
    let got = on_ranks(3, |g| {
        let r = g.rank() as f32;
        let mut sum = Tensor::from_slice(&[r + 1.0, 2.0 * r]);
        g.all_reduce_sum(&mut sum).unwrap();
        let mut b = Tensor::from_slice(&[r, r]);
        g.broadcast(&mut b, 1).unwrap();
        let gathered = g.all_gather(&Tensor::from_slice(&[r * 10.0])).unwrap();
        g.barrier().unwrap();
        if g.rank() == 0 {
            g.store_set("hello", b"vocab").unwrap();
        }
        let stored = g.store_get("hello").unwrap();
        // Once every rank has read it, the key can go (and is gone).
        g.barrier().unwrap();
        if g.rank() == 0 {
            assert!(g.store_delete("hello").unwrap());
            assert!(!g.store_delete("hello").unwrap());
        }
        let v = |t: &Tensor| Vec::<f32>::try_from(t).unwrap();
        (
            v(&sum),
            v(&b),
            gathered.iter().map(v).collect::<Vec<_>>(),
            stored,
        )
    });
    for (sum, b, gathered, stored) in got {
        assert_eq!(sum, vec![6.0, 6.0]);
        assert_eq!(b, vec![1.0, 1.0]);
        assert_eq!(gathered, vec![vec![0.0], vec![10.0], vec![20.0]]);
        assert_eq!(stored, b"vocab");
    }
}

#[test]
fn a_rank_that_never_arrives_is_a_timeout_error() {
    let port = free_port();
    let t = Instant::now();
    let err = ProcessGroup::connect(&launch(0, 2, port), Duration::from_secs(3)).unwrap_err();
    assert!(
        t.elapsed() < Duration::from_secs(30),
        "took {:?}",
        t.elapsed()
    );
    let msg = err.to_string();
    assert!(msg.contains("rank 0 of 2"), "{msg}");
    assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");
}

#[test]
fn a_peer_that_leaves_fails_the_collective_instead_of_hanging() {
    let got = on_ranks(2, |g| {
        if g.rank() == 1 {
            drop(g); // closes its connections, as a killed process's kernel does
            return None;
        }
        std::thread::sleep(Duration::from_millis(500));
        let t = Instant::now();
        let mut x = Tensor::from_slice(&[1.0f32]);
        let err = g.all_reduce_sum(&mut x).unwrap_err();
        Some((err.to_string(), t.elapsed()))
    });
    let (msg, took) = got[0].clone().unwrap();
    assert!(
        msg.contains("rank 0 of 2") && msg.contains("rank 1 is gone"),
        "{msg}"
    );
    assert!(took < Duration::from_secs(25), "took {took:?}");
}

#[test]
fn launch_reads_torchrun_variables() {
    let vars = |pairs: &'static [(&'static str, &'static str)]| {
        move |k: &str| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    };
    assert_eq!(Launch::from_vars(vars(&[])).unwrap(), None);
    let l = Launch::from_vars(vars(&[
        ("WORLD_SIZE", "4"),
        ("RANK", "3"),
        ("LOCAL_RANK", "1"),
        ("MASTER_ADDR", "node0"),
        ("MASTER_PORT", "29400"),
        ("TORCHELASTIC_USE_AGENT_STORE", "True"),
    ]))
    .unwrap()
    .unwrap();
    assert_eq!((l.rank, l.world_size, l.local_rank), (3, 4, 1));
    assert_eq!(
        (l.master_addr.as_str(), l.master_port, l.agent_store),
        ("node0", 29400, true)
    );
    let e = Launch::from_vars(vars(&[("WORLD_SIZE", "2"), ("RANK", "2")])).unwrap_err();
    assert!(e.to_string().contains("RANK=\"2\""), "{e}");
    let e = Launch::from_vars(vars(&[("WORLD_SIZE", "2")])).unwrap_err();
    assert!(e.to_string().contains("RANK"), "{e}");
    let e = Launch::from_vars(vars(&[
        ("WORLD_SIZE", "2"),
        ("RANK", "0"),
        ("MASTER_PORT", "70000"),
    ]))
    .unwrap_err();
    assert!(e.to_string().contains("MASTER_PORT"), "{e}");
}

/// Where the CUDA headers were installed (scripts/setup.sh does), NCCL is compiled in; on a
/// machine without a GPU, asking for it is an error naming the rank, never an abort.
#[test]
fn nccl_is_built_where_its_headers_are_and_fails_cleanly_without_a_gpu() {
    let site = std::env::var_os("LIBTORCH")
        .map(std::path::PathBuf::from)
        .and_then(|p| std::fs::canonicalize(p).ok())
        .and_then(|p| {
            p.parent()
                .map(|s| s.join("nvidia/cu13/include/crt/host_config.h"))
        });
    if site.is_some_and(|h| h.exists()) && std::env::var_os("GNMT_NO_NCCL").is_none() {
        assert!(
            nccl_built(),
            "the CUDA headers are installed but NCCL was not compiled in"
        );
    }
    assert_eq!(Backend::for_device(tch::Device::Cpu), Backend::Gloo);
    if tch::Cuda::is_available() {
        return;
    }
    let port = free_port();
    let err =
        ProcessGroup::connect_with(&launch(0, 1, port), Duration::from_secs(10), Backend::Nccl)
            .unwrap_err()
            .to_string();
    assert!(
        err.contains("rank 0 of 1") || err.contains("without"),
        "{err}"
    );
}
