//! The Rust-core side of `npm run bench`: the same operations as the Node benchmark, called on
//! `Vault` directly with no Node in between, so the table can show what the binding costs.
//! Prints one JSON line per row: `{"name", "median", "min", "max"}` in ops/s.
//!
//! `cargo run --release --features bench --bin bench_core -- [N]`

use std::time::Instant;

use linkvault::client::{OpenOptions, Vault};
use linkvault::crypto::Key;
use linkvault::store::Pending;
use serde_json::{json, Value};

fn payload(id: &str, r: usize) -> Value {
  json!({
    "linked_account_id": id,
    "name": format!("User {id}"),
    "udf": { "plan": "pro", "seats": r, "region": "eu" },
    "your_app": { "app_id": "app", "auth_credentials": { "Authorization": format!("Bearer token-{id}-{r}") } },
  })
}

/// Whether the row `name` runs: `BENCH_ONLY` (as in bench/run.js) is a comma-separated list of
/// substrings of row names; unset, every row runs.
fn selected(name: &str) -> bool {
  match std::env::var("BENCH_ONLY") {
    Ok(only) if !only.is_empty() => only.split(',').any(|s| name.contains(s.trim())),
    _ => true,
  }
}

/// Runs `n` calls of `op` with at most `inflight` outstanding, `RUNS` times after a warm-up.
fn measure<T, F>(runs: usize, n: usize, inflight: usize, mut op: F) -> (f64, f64, f64)
where
  F: FnMut(usize, usize) -> Pending<T>,
{
  let mut rates = Vec::new();
  for r in 0..=runs {
    let start = Instant::now();
    let mut queue = std::collections::VecDeque::with_capacity(inflight);
    for i in 0..n {
      if queue.len() == inflight {
        if let Some(p) = queue.pop_front() {
          finish(p);
        }
      }
      queue.push_back(op(i, r));
    }
    for p in queue {
      finish(p);
    }
    if r > 0 {
      rates.push(n as f64 / start.elapsed().as_secs_f64());
    }
  }
  rates.sort_by(|a, b| a.total_cmp(b));
  (rates[rates.len() / 2], rates[0], rates[rates.len() - 1])
}

type Rate = (f64, f64, f64);

/// Measures the row `name` unless `BENCH_ONLY` leaves it out.
fn push_row(rows: &mut Vec<(String, Rate)>, name: String, run: impl FnOnce() -> Rate) {
  if selected(&name) {
    rows.push((name, run()));
  }
}

fn finish<T>(p: Pending<T>) {
  if let Err(e) = p.wait() {
    eprintln!("bench operation failed: {e:?}");
    std::process::exit(1);
  }
}

fn main() {
  let arg = |i: usize, default: usize| {
    std::env::args()
      .nth(i)
      .and_then(|a| a.parse().ok())
      .unwrap_or(default)
  };
  let (n, accounts, runs) = (arg(1, 4000), arg(2, 2000), arg(3, 5));
  let dir = std::env::temp_dir().join(format!("linkvault-bench-core-{}", std::process::id()));
  let _ = std::fs::create_dir_all(&dir);
  let path = dir.join("bench.db").to_string_lossy().to_string();
  let mut options = match OpenOptions::parse(Some(&json!({ "path": path, "orgId": "org_bench" }))) {
    Ok(o) => o,
    Err(e) => panic!("options: {e:?}"),
  };
  options.encryption_key = Key::random().ok();
  let vault = match Vault::open(options).wait() {
    Ok(v) => v,
    Err(e) => panic!("open: {e:?}"),
  };
  for i in 0..accounts {
    finish(vault.upsert_linked_account(&payload(&format!("user-{i}"), 0), None));
  }
  let mut cursors: Vec<Option<String>> = vec![None];
  loop {
    let q = match cursors.last().cloned().flatten() {
      Some(c) => json!({ "limit": 50, "after": c }),
      None => json!({ "limit": 50 }),
    };
    match vault.list_linked_accounts(Some(&q)).wait() {
      Ok(page) => match page.next {
        Some(next) => cursors.push(Some(linkvault::accounts::encode_cursor(next))),
        None => break,
      },
      Err(e) => panic!("list: {e:?}"),
    }
  }
  let tokens: Vec<String> = (0..100)
    .map(|i| {
      match vault
        .get_token_for_linked_account(&json!({ "linked_account_id": format!("user-{i}") }))
        .wait()
      {
        Ok(t) => t.token.clone(),
        Err(e) => panic!("mint: {e:?}"),
      }
    })
    .collect();
  let mut link_seq = 0usize;
  let mut rows = Vec::new();
  push_row(
    &mut rows,
    "verifySessionTokenSync (baseline jsonwebtoken) sync".to_string(),
    || {
      measure(runs, n * 20, 1, |i, _| {
        Pending::ready(vault.verify_session_token(&tokens[i % 100]))
      })
    },
  );
  for inflight in [1usize, 64] {
    let name = |op: &str| format!("{op} x{inflight}");
    push_row(&mut rows, name("upsertLinkedAccount (insert)"), || {
      measure(runs, n, inflight, |i, r| {
        vault.upsert_linked_account(&payload(&format!("new-{r}-{i}-{inflight}"), r), None)
      })
    });
    push_row(&mut rows, name("upsertLinkedAccount (update)"), || {
      measure(runs, n, inflight, |i, r| {
        vault.upsert_linked_account(
          &payload(&format!("user-{}", i % accounts), r + 1 + inflight),
          None,
        )
      })
    });
    push_row(&mut rows, name("getLinkedAccountById"), || {
      measure(runs, n, inflight, |i, _| {
        vault.get_linked_account_by_id(&json!(format!("user-{}", i % accounts)))
      })
    });
    push_row(&mut rows, name("getAllLinkedAccounts (page of 50)"), || {
      measure(runs, n / 10, inflight, |i, _| {
        vault.get_all_linked_accounts(Some(&json!({ "page": 1 + i % 20, "limit": 50 })))
      })
    });
    push_row(&mut rows, name("getTokenForLinkedAccount (mint)"), || {
      measure(runs, n, inflight, |i, _| {
        vault.get_token_for_linked_account(
          &json!({ "linked_account_id": format!("user-{}", i % accounts), "force_refresh": true }),
        )
      })
    });
    push_row(
      &mut rows,
      name("verifySessionToken (async; baseline jose)"),
      || {
        measure(runs, n * 5, inflight, |i, _| {
          Pending::ready(vault.verify_session_token(&tokens[i % 100]))
        })
      },
    );
    push_row(
      &mut rows,
      name("listLinkedAccounts (keyset page of 50)"),
      || {
        measure(runs, n / 10, inflight, |i, _| {
          let q = match &cursors[i % cursors.len()] {
            Some(c) => json!({ "limit": 50, "after": c }),
            None => json!({ "limit": 50 }),
          };
          vault.list_linked_accounts(Some(&q))
        })
      },
    );
  }
  for inflight in [1usize, 64] {
    push_row(&mut rows, format!("linkIdentity x{inflight}"), || {
      measure(runs, n, inflight, |i, _| {
        link_seq += 1;
        vault.link_identity(
          &json!(format!("user-{}", i % accounts)),
          &json!({ "provider": "github", "user_id": format!("gh-{link_seq}"), "email": format!("U{i}@Example.com"), "email_verified": true, "isSocial": true }),
        )
      })
    });
  }
  let _ = vault.close().wait();
  let _ = std::fs::remove_dir_all(&dir);
  for (name, (median, min, max)) in rows {
    println!(
      "{}",
      json!({ "name": name, "median": median, "min": min, "max": max })
    );
  }
}
