using System.CommandLine;
using System.Text;
using Ullme.Cli.Io;
using Ullme.MLNet;
using Ullme.MLNet.Inference;
using Ullme.MLNet.Modeling;
using Ullme.MLNet.Tokenization;

namespace Ullme.Cli.Commands;

/// <summary><c>ullme tokenize</c>: texts in, token ids (with the model's special tokens) out.</summary>
internal static class TokenizeCommand
{
    public static Command Create()
    {
        var model = CommonOptions.Model("A model folder, a tokenizer file (tokenizer.json, tokenizer.model, vocab.txt), a Hugging Face id (org/name[@revision]), or 'default'.");
        var input = new Option<string>("--input", "-i") { Description = "Input: .txt, .jsonl ({\"text\"}), .csv/.tsv (with --text-column).", Required = true };
        var output = new Option<string>("--output", "-o") { Description = "JSONL: {\"input_ids\": [...]} a line, in input order.", Required = true };
        var textColumn = new Option<string>("--text-column") { Description = "Column holding the text in .csv/.tsv input.", DefaultValueFactory = _ => "text" };
        var noSpecial = new Option<bool>("--no-special-tokens") { Description = "Do not add the model's special tokens (BOS, [CLS] ... [SEP])." };
        var command = new Command("tokenize", "Tokenize texts exactly as the model does.") { model, input, output, textColumn, noSpecial };
        command.SetAction((parse, cancellationToken) =>
        {
            string m = parse.GetValue(model)!;
            string inPath = parse.GetValue(input)!;
            string outPath = parse.GetValue(output)!;
            if (!File.Exists(inPath)) throw new UllmeException($"Input file '{inPath}' does not exist.");
            CliPaths.RefuseOverwritingInput(inPath, outPath);
            var tokenizer = TokenizerLoader.Load(m == UllmeModel.DefaultModelName ? DefaultModel.EnsureFolder() : CliConsole.DownloadIfHubId(m) ?? m);
            bool special = !parse.GetValue(noSpecial);
            var stats = new InputStats();
            int count = 0;
            AtomicFile.Write(outPath, stream =>
            {
                // Streamed: one input line and its ids in memory at a time.
                foreach (var r in InputReader.Enumerate(inPath, parse.GetValue(textColumn)!, stats))
                {
                    cancellationToken.ThrowIfCancellationRequested();
                    var ids = r.InputIds ?? [.. tokenizer.Encode(r.Text!, special)];
                    stream.Write(Encoding.UTF8.GetBytes("{\"input_ids\":[" + string.Join(',', ids) + "]}\n"));
                    count++;
                }
            });
            if (InputReader.Utf8Warning(inPath, stats) is { } utf8) CliConsole.Warn(utf8);
            CliConsole.Note($"{count} texts tokenized ({tokenizer.Kind}) → {outPath}");
            return Task.FromResult(0);
        });
        return command;
    }
}
