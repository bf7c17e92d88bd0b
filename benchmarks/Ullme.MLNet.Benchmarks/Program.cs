using Ullme.MLNet.Benchmarks;

// ullme benchmarks (issue 6). Not tests: nothing here asserts, and `dotnet test` never runs it.
//   run    the end-to-end report (JSON + markdown + PNG plots): dotnet run -c Release --project benchmarks/Ullme.MLNet.Benchmarks -- run [--quick]
//   micro  BenchmarkDotNet micro-benchmarks:                    dotnet run -c Release --project benchmarks/Ullme.MLNet.Benchmarks -- micro --filter '*'
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
if (args.Length > 0 && args[0] == "run")
    return BenchRunner.Run(args[1..]);
Console.WriteLine("""
    usage:
      run [--quick] [--threads N] [--out DIR] [--assets DIR] [--only gemm,minilm,tokenizers,mfu,training,scaling]
          end-to-end report: texts/s, tokens/s, peak memory and ratios vs ONNX Runtime, HF tokenizers and the GEMM peak;
          writes DIR/results.json, DIR/results.md and DIR/*.png (default DIR: docs/performance)
      micro [BenchmarkDotNet arguments, e.g. --filter *Pool*]
    """);
return args.Length == 0 ? 0 : 2;
