using System.Text.Json;
using Ullme.MLNet.Inference;
using Ullme.MLNet.Tests.Modeling;

namespace Ullme.MLNet.Tests.MLNetIntegration;

/// <summary>
/// A tiny random Llama that reads text: the committed random decoder fixture (vocab 64, hidden 32, 2 layers, with an
/// untied lm_head) plus a character-level BPE tokenizer.json (no merges; BOS "&lt;s&gt;" added by a TemplateProcessing
/// post-processor), written once per test run into a temporary folder. Loads in milliseconds.
/// </summary>
internal static class TinyScoringModel
{
    private static readonly Lazy<string> FolderValue = new(Create);
    private static readonly Lazy<UllmeModel> ModelValue = new(() => UllmeModel.Load(Folder));

    /// <summary>The model folder (config.json, model.safetensors, tokenizer.json).</summary>
    public static string Folder => FolderValue.Value;

    /// <summary>The model, shared by the tests (the engine is thread-safe).</summary>
    public static UllmeModel Model => ModelValue.Value;

    private const string Alphabet = " abcdefghijklmnopqrstuvwxyz.,?!:'\nQPT0123456789ABCDEFGHIJKL";

    private static string Create()
    {
        string folder = Path.Combine(Path.GetTempPath(), "ullme-tiny-scoring-" + Environment.ProcessId);
        Directory.CreateDirectory(folder);
        string fixture = DecoderTestSupport.FixtureFolder("llama");
        File.Copy(Path.Combine(fixture, "config.json"), Path.Combine(folder, "config.json"), overwrite: true);
        File.Copy(Path.Combine(fixture, "model.safetensors"), Path.Combine(folder, "model.safetensors"), overwrite: true);
        var vocab = new Dictionary<string, int> { ["<unk>"] = 0, ["<s>"] = 1, ["</s>"] = 2 };
        foreach (char c in Alphabet.Distinct()) vocab[c.ToString()] = vocab.Count;
        if (vocab.Count > 64) throw new InvalidOperationException($"tokenizer vocabulary {vocab.Count} exceeds the fixture's 64");
        var tokenizer = new
        {
            version = "1.0",
            added_tokens = new[]
            {
                new { id = 0, content = "<unk>", single_word = false, lstrip = false, rstrip = false, normalized = false, special = true },
                new { id = 1, content = "<s>", single_word = false, lstrip = false, rstrip = false, normalized = false, special = true },
                new { id = 2, content = "</s>", single_word = false, lstrip = false, rstrip = false, normalized = false, special = true },
            },
            post_processor = new Dictionary<string, object>
            {
                ["type"] = "TemplateProcessing",
                ["single"] = new object[] { new { SpecialToken = new { id = "<s>", type_id = 0 } }, new { Sequence = new { id = "A", type_id = 0 } } },
                ["pair"] = new object[] { new { SpecialToken = new { id = "<s>", type_id = 0 } }, new { Sequence = new { id = "A", type_id = 0 } }, new { Sequence = new { id = "B", type_id = 1 } } },
                ["special_tokens"] = new Dictionary<string, object> { ["<s>"] = new { id = "<s>", ids = new[] { 1 }, tokens = new[] { "<s>" } } },
            },
            model = new { type = "BPE", vocab, merges = Array.Empty<string>(), unk_token = "<unk>" },
        };
        File.WriteAllText(Path.Combine(folder, "tokenizer.json"), JsonSerializer.Serialize(tokenizer));
        File.WriteAllText(Path.Combine(folder, "tokenizer_config.json"), """{"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "</s>"}""");
        return folder;
    }
}
