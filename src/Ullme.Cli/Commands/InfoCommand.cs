using System.CommandLine;
using Spectre.Console;
using Ullme.MLNet.Modeling;
using Ullme.MLNet.Pooling;

namespace Ullme.Cli.Commands;

/// <summary><c>ullme info</c>: what a model folder holds.</summary>
internal static class InfoCommand
{
    public static Command Create()
    {
        var model = CommonOptions.Model();
        var dtype = CommonOptions.DType();
        var device = CommonOptions.Device();
        var backend = CommonOptions.Backend();
        var command = new Command("info", "Show a model's architecture, parameters, dimensions, dtype and tokenizer.") { model, dtype, device, backend };
        command.SetAction(parse =>
        {
            using var m = CliConsole.LoadModel(parse.GetValue(model)!, CommonOptions.LoadOptions(parse.GetValue(dtype)!, parse.GetValue(device)!, null, parse.GetValue(backend)));
            var c = m.Config;
            long parameters = m.Backbone.parameters().Sum(p => p.numel());
            var table = new Table().AddColumn("property").AddColumn("value");
            void Row(string k, object? v) => table.AddRow(Markup.Escape(k), Markup.Escape(v?.ToString() ?? "-"));
            Row("model", m.ModelId);
            Row("folder", m.SourceFolder);
            Row("architecture", $"{c.ModelType} ({string.Join(", ", c.Architectures ?? [])})");
            Row("parameters", m.Backend == MLNet.Inference.InferenceBackend.OnnxRuntime ? "in the ONNX graph" : $"{parameters:N0}");
            Row("layers", c.NumHiddenLayers);
            Row("hidden size (embedding dimension)", m.EmbeddingDimension);
            Row("attention heads / key-value heads / head dim", $"{c.NumAttentionHeads} / {c.EffectiveKeyValueHeads} / {c.EffectiveHeadDim}");
            Row("intermediate size", c.IntermediateSize);
            Row("vocabulary", c.VocabSize);
            Row("max positions", c.MaxPositionEmbeddings);
            Row("checkpoint dtype", c.TorchDtype);
            Row("loaded as", $"{m.ScalarType} on {m.Device}");
            Row("backend", MLNet.OptionNames.Backend.ToName(m.Backend));
            Row("tokenizer", $"{m.Tokenizer.Kind}, {m.Tokenizer.VocabSize} ids");
            Row("language-model head", m.Backbone.HasLanguageModelHead ? "yes (scoring available)" : "no (encoder)");
            Row("default pooling / attention / max length / normalize",
                $"{Pooler.ToName(m.Defaults.Pooling)} / {MLNet.OptionNames.Attention.ToName(m.Defaults.Attention)} / {m.Defaults.MaxLength} / {m.Defaults.Normalize}");
            AnsiConsole.Write(table);
            return 0;
        });
        return command;
    }
}
