using Ullme.MLNet.Benchmarks;

// ullme benchmarks (issue 6). Not tests: nothing here asserts, and `dotnet test` never runs it.
//   run    the end-to-end report (JSON + markdown + PNG plots): dotnet run -c Release --project benchmarks/Ullme.MLNet.Benchmarks -- run [--quick]
//   micro  BenchmarkDotNet micro-benchmarks:                    dotnet run -c Release --project benchmarks/Ullme.MLNet.Benchmarks -- micro --filter '*'
//   load-test  `ullme serve` under concurrent clients:            dotnet run -c Release --project benchmarks/Ullme.MLNet.Benchmarks -- load-test [--quick]
//   soak   10,000 calls, live tensors and RSS:                   dotnet run -c Release --project benchmarks/Ullme.MLNet.Benchmarks -- soak [--quick]
if (args.Length > 0 && args[0] == "micro")
    return MicroBenchmarks.Run(args[1..]);
if (args.Length > 0 && args[0] == "probe-gemm")
    return Ullme.MLNet.Benchmarks.GemmProbe.Run();
if (args.Length > 0 && args[0] == "probe-minilm")
    return Ullme.MLNet.Benchmarks.MiniLmProbe.Run(args[1..]);
if (args.Length > 0 && args[0] == "probe-memory")
    return Ullme.MLNet.Benchmarks.MemoryProbe.Run(args[1..]);
if (args.Length > 0 && args[0] == "probe-bert-ops")
    return Ullme.MLNet.Benchmarks.BertOpsProbe.Run(args[1..]);
if (args.Length > 0 && args[0] == "probe-tokenizer")
    return Ullme.MLNet.Benchmarks.TokenizerProbe.Run(args[1..]);
if (args.Length > 0 && args[0] == "train-config")
    return Ullme.MLNet.Benchmarks.Sections.TrainingSection.RunConfig(args[1..]);
if (args.Length > 0 && args[0] == "probe-onnx-graph")
    return Ullme.MLNet.Benchmarks.OnnxGraphProbe.Run(args[1..]);
if (args.Length > 0 && args[0] == "run")
    return BenchRunner.Run(args[1..]);
if (args.Length > 0 && args[0] == "load-test")
    return Ullme.MLNet.Benchmarks.Serving.LoadTest.Run(args[1..]);
if (args.Length > 0 && args[0] == "soak")
    return Ullme.MLNet.Benchmarks.Reliability.Soak.Run(args[1..]);
Console.WriteLine("""
    usage:
      run [--quick] [--threads N] [--out DIR] [--assets DIR] [--only gemm,minilm,tokenizers,mfu,training,scaling,onnx,cluster,sweeps,train-pytorch]
          end-to-end report: texts/s, tokens/s, peak memory and ratios vs ONNX Runtime, HF tokenizers and the GEMM peak;
          writes DIR/results.json, DIR/results.md and DIR/*.png (default DIR: docs/performance)
      micro [BenchmarkDotNet arguments, e.g. --filter *Pool*]
      load-test [--quick] [--threads N] [--seconds CAP] [--in-process] [--json FILE] [--assets DIR]
          `ullme serve` under 1/8/32/128 concurrent clients (single texts) and 8 clients of 64-text batches, loopback,
          bounded; texts/s, p50/p95/p99 and the fraction of offline Embed throughput in the same run (docs/serving.md)
      soak [--calls N] [--quick] [--threads N] [--only generator,prediction-engine] [--assets DIR]
          N (10,000) single-text calls through the IEmbeddingGenerator and an ML.NET PredictionEngine: live tensor
          count and RSS at call N/10 and N (docs/reliability.md)
    """);
return args.Length == 0 ? 0 : 2;
