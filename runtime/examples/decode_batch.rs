//! Decoding throughput of continuous batching ([`edgecut::Llm::step_turns`]) at several batch
//! sizes: `decode_batch MODEL [1,2,4,8] [STEPS]` prints ms per step and tokens/s (the prompts
//! run first, then STEPS timed steps of one token per turn).

use std::time::Instant;

use edgecut::{GenerateOptions, Llm, LlmOptions, Turn};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let model = args.get(1).expect("decode_batch MODEL [SIZES] [STEPS]");
    let llm = Llm::open(model, &LlmOptions::default()).expect("opening the model");
    let sizes: Vec<usize> = args
        .get(2)
        .map(|s| {
            s.split(',')
                .map(|x| x.parse().expect("batch sizes"))
                .collect()
        })
        .unwrap_or(vec![1, 2, 4, 8]);
    let steps: usize = args.get(3).map_or(60, |s| s.parse().expect("steps"));
    let opts = GenerateOptions::default()
        .with_max_tokens(steps + 10)
        .with_ignore_eos(true);
    for n in sizes {
        let mut turns: Vec<Turn> = (0..n)
            .map(|i| {
                let p = llm.tokenize(&format!("Story number {i} is about")).unwrap();
                Turn::new(&llm, llm.new_context().unwrap(), p, &opts).unwrap()
            })
            .collect();
        let mut refs: Vec<&mut Turn> = turns.iter_mut().collect();
        // The prompts, then a few steps to warm up.
        for _ in 0..5 {
            llm.step_turns(&mut refs);
        }
        let t = Instant::now();
        for _ in 0..steps {
            llm.step_turns(&mut refs);
        }
        let s = t.elapsed().as_secs_f64();
        println!(
            "batch {n}: {:.2} ms/step, {:.1} tokens/s",
            s * 1e3 / steps as f64,
            (n * steps) as f64 / s
        );
    }
}
