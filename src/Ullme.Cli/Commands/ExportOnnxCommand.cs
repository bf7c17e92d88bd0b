using System.CommandLine;
using System.Diagnostics;
using Ullme.MLNet;
using Ullme.MLNet.Inference;
using Ullme.MLNet.Onnx;

namespace Ullme.Cli.Commands;

/// <summary><c>ullme export-onnx</c>: a model (folder, Hub id or default) to an ONNX folder for ONNX Runtime.</summary>
internal static class ExportOnnxCommand
{
    public static Command Create()
    {
        var model = CommonOptions.Model();
        var output = new Option<string>("--output", "-o") { Description = "Folder to write (model.onnx, model.onnx.data beyond 2 GB, tokenizer files, config.json, ullme.json). Replaced atomically.", Required = true };
        var attention = new Option<string?>("--attention") { Description = "bidirectional | causal: the attention mode baked into the graph (default: the model's)." };
        var pooling = new Option<string?>("--pooling") { Description = "mean | weighted-mean | last-token | first-token for sentence_embedding (default: the model's)." };
        var noNormalize = new Option<bool>("--no-normalize") { Description = "sentence_embedding is not L2-normalised (default: the model's setting)." };
        var quantize = new Option<string>("--quantize") { Description = "none | int8 (dynamic, per-channel weights) | int4 (MatMulNBits, block-wise).", DefaultValueFactory = _ => "none" };
        var opset = CommonOptions.Int("--opset", "ONNX opset, 17 to 21.", 17);
        var blockSize = CommonOptions.Int("--int4-block-size", "int4: weights per quantization block (16, 32, 64, 128 or 256).", 32);
        var noPoolingMask = new Option<bool>("--no-pooling-mask") { Description = "Take only input_ids and attention_mask (the sentence-transformers ONNX interface); without it the graph also takes pooling_mask, which keeps an instruction out of pooling." };
        var command = new Command("export-onnx", "Export a model to ONNX (float32, int8 or int4) for ONNX Runtime, ML.NET ApplyOnnxModel or `--backend onnx`.")
        {
            model, output, attention, pooling, noNormalize, quantize, opset, blockSize, noPoolingMask,
        };
        command.SetAction(parse =>
        {
            var options = new OnnxExportOptions
            {
                Attention = CommonOptions.Attention(parse.GetValue(attention)),
                Pooling = CommonOptions.Pooling(parse.GetValue(pooling)),
                Normalize = parse.GetValue(noNormalize) ? false : null,
                Quantize = OnnxNames.Quantize.Parse(parse.GetValue(quantize)!, "OnnxExportOptions.Quantize"),
                Opset = parse.GetValue(opset),
                Int4BlockSize = parse.GetValue(blockSize),
                PoolingMaskInput = !parse.GetValue(noPoolingMask),
            };
            options.Validate();
            string outDir = parse.GetValue(output)!;
            using var loaded = CliConsole.LoadModel(parse.GetValue(model)!, new ModelLoadOptions());
            var clock = Stopwatch.StartNew();
            var result = UllmeOnnx.Export(loaded, outDir, options);
            long bytes = new FileInfo(result.ModelFile).Length + (result.ExternalDataFile is { } d ? new FileInfo(d).Length : 0);
            CliConsole.Note($"Exported {loaded.ModelId} to {result.ModelFile}{(result.ExternalDataFile is null ? "" : " + model.onnx.data")}: " +
                $"{bytes / 1e6:F1} MB, {result.Nodes} nodes, {result.LinearLayers} linear layers ({OnnxNames.Quantize.ToName(result.Quantize)}), " +
                $"{OptionNames.Attention.ToName(result.Attention)} attention, {Ullme.MLNet.Pooling.Pooler.ToName(result.Pooling)} pooling{(result.Normalize ? ", normalised" : "")}, " +
                $"in {clock.Elapsed.TotalSeconds:F1} s.");
            return 0;
        });
        return command;
    }
}
