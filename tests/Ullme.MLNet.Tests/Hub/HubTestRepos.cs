using System.Text.Json;
using Ullme.MLNet.Hub;
using Ullme.MLNet.Inference;
using Ullme.MLNet.Modeling;
using Ullme.MLNet.Pooling;
using Ullme.MLNet.Tests.MLNetIntegration;
using static TorchSharp.torch;

namespace Ullme.MLNet.Tests.Hub;

/// <summary>
/// Two tiny random Llama repositories written once per test class from the committed fixture (TinyScoringModel):
/// <see cref="MainFolder"/> (model.safetensors, tokenizer.json, the sentence-transformers files with
/// 1_Pooling/config.json, ullme.json with mean pooling, plus a pytorch_model.bin and a README that a load must never
/// download) and <see cref="V1Folder"/> (the same weights as two shards with model.safetensors.index.json, last-token
/// pooling: different embeddings).
/// </summary>
public sealed class HubTestRepos : IDisposable
{
    public const string RepoId = "tiny-org/tiny-llama";

    public static readonly string[] Texts = ["the cat sat on the mat.", "hello!", "a dog ran in the park, fast."];

    public string Root { get; } = Directory.CreateTempSubdirectory("ullme-hub-repos-").FullName;

    public string MainFolder => Path.Combine(Root, "main");

    public string V1Folder => Path.Combine(Root, "v1");

    /// <summary>Files a load of <see cref="MainFolder"/> downloads (all but the pickle and the README).</summary>
    public static readonly string[] MainLoadFiles =
    [
        "1_Pooling/config.json", "config.json", "config_sentence_transformers.json", "model.safetensors", "modules.json",
        "sentence_bert_config.json", "tokenizer.json", "tokenizer_config.json", "ullme.json",
    ];

    public HubTestRepos()
    {
        var model = TinyScoringModel.Model;
        model.SaveFolder(MainFolder, model.Defaults with { Pooling = PoolingMode.Mean, Attention = AttentionMode.Bidirectional, Normalize = true });
        File.WriteAllBytes(Path.Combine(MainFolder, "pytorch_model.bin"), new byte[4096]);
        File.WriteAllText(Path.Combine(MainFolder, "README.md"), "# tiny\n");

        model.SaveFolder(V1Folder, model.Defaults with { Pooling = PoolingMode.LastToken, Attention = AttentionMode.Bidirectional, Normalize = true });
        string single = Path.Combine(V1Folder, "model.safetensors");
        var tensors = SafeTensors.LoadAll(single);
        var names = tensors.Keys.Order(StringComparer.Ordinal).ToList();
        var weightMap = new Dictionary<string, string>();
        var shards = new[] { names.Take(names.Count / 2).ToList(), names.Skip(names.Count / 2).ToList() };
        for (int s = 0; s < 2; s++)
        {
            string shard = $"model-0000{s + 1}-of-00002.safetensors";
            SafeTensors.Save(Path.Combine(V1Folder, shard), shards[s].Select(n => new KeyValuePair<string, Tensor>(n, tensors[n])).ToList(),
                new Dictionary<string, string> { ["format"] = "pt" });
            foreach (string n in shards[s]) weightMap[n] = shard;
        }
        foreach (var t in tensors.Values) t.Dispose();
        File.Delete(single);
        File.WriteAllText(Path.Combine(V1Folder, "model.safetensors.index.json"),
            JsonSerializer.Serialize(new { metadata = new { total_size = 0 }, weight_map = weightMap }));
    }

    public void Dispose() => Directory.Delete(Root, recursive: true);

    /// <summary>Embeddings of <see cref="Texts"/> by a model loaded from <paramref name="source"/>.</summary>
    public static float[][] Embed(string source, ModelLoadOptions? options = null)
    {
        using var model = UllmeModel.Load(source, options);
        return new EmbeddingEngine(model).Embed(Texts);
    }

    public static void AssertSame(float[][] expected, float[][] actual)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++) Assert.Equal(expected[i], actual[i]);
    }

    /// <summary>Hub settings for a test: the endpoint given, a fresh cache folder under <paramref name="dir"/>.</summary>
    public static HubOptions Options(string endpoint, string dir, string? token = null, bool offline = false) => new()
    {
        Endpoint = endpoint, CacheFolder = Path.Combine(dir, "hub"), Token = token, Offline = offline, Timeout = TimeSpan.FromSeconds(20),
    };

    /// <summary>An address on 127.0.0.1 where nothing listens.</summary>
    public static string DeadEndpoint()
    {
        var listener = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        listener.Start();
        int port = ((System.Net.IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();
        return $"http://127.0.0.1:{port}";
    }
}
