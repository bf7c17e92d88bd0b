using System.CommandLine;
using Microsoft.Extensions.Logging;
using Ullme.MLNet;
using Ullme.MLNet.Inference;
using Ullme.MLNet.Server;

namespace Ullme.Cli.Commands;

/// <summary><c>ullme serve</c>: an OpenAI-compatible embedding / rerank / score server with batching across requests.</summary>
internal static class ServeCommand
{
    public static Command Create()
    {
        var model = CommonOptions.Model();
        var host = new Option<string?>("--host") { Description = "Address to bind (default 127.0.0.1, this machine only; 0.0.0.0 = every interface)." };
        var port = new Option<int>("--port", "-p") { Description = "TCP port (0 = any free port; the URL is printed).", DefaultValueFactory = _ => 8080 };
        var modelName = new Option<string?>("--model-name") { Description = "Model id reported by /v1/models and in responses (default: the model's)." };
        var maxBatchTokens = new Option<int>("--max-batch-tokens") { Description = "Padded tokens (rows x longest row) per forward pass.", DefaultValueFactory = _ => 16384 };
        var maxBatchSize = new Option<int>("--max-batch-size") { Description = "Rows per forward pass.", DefaultValueFactory = _ => 128 };
        var maxQueue = new Option<int>("--max-queue") { Description = "Rows waiting for the model, all requests together; beyond it requests get 429 + Retry-After.", DefaultValueFactory = _ => 1024 };
        var maxInputTokens = new Option<int?>("--max-input-tokens") { Description = "Tokens per input, special tokens included (default: the model's max length); longer inputs are a 400 unless the request says truncate." };
        var maxClientBatch = new Option<int>("--max-client-batch-size") { Description = "Inputs per request; more is a 413.", DefaultValueFactory = _ => 2048 };
        var maxBody = new Option<long>("--max-body-bytes") { Description = "Request body limit; larger is a 413.", DefaultValueFactory = _ => 2_000_000 };
        var apiKey = new Option<string?>("--api-key") { Description = "Require 'Authorization: Bearer KEY' (visible in the process list: prefer --api-key-file)." };
        var apiKeyFile = new Option<string?>("--api-key-file") { Description = "File whose first line is the API key." };
        var pooling = new Option<string?>("--pooling") { Description = "mean | weighted-mean | last-token | first-token (default: the model's)." };
        var attention = new Option<string?>("--attention") { Description = "bidirectional | causal (default: bidirectional)." };
        var instruction = new Option<string?>("--instruction") { Description = "Text put before every embedded input (and the rerank query); attended to, excluded from pooling." };
        var dtype = CommonOptions.DType();
        var device = CommonOptions.Device();
        var backend = CommonOptions.Backend();
        var threads = CommonOptions.Threads();
        var shutdown = new Option<double>("--shutdown-timeout") { Description = "Seconds a stop waits for requests in flight.", DefaultValueFactory = _ => 30 };

        var command = new Command("serve", "Serve a model over HTTP: OpenAI /v1/embeddings, TEI-style /embed, /rerank, /score, /health, /metrics.")
        {
            model, host, port, modelName, maxBatchTokens, maxBatchSize, maxQueue, maxInputTokens, maxClientBatch, maxBody,
            apiKey, apiKeyFile, pooling, attention, instruction, dtype, device, backend, threads, shutdown,
        };
        command.SetAction(parse =>
        {
            string? key = parse.GetValue(apiKey);
            string? keyFile = parse.GetValue(apiKeyFile);
            if (key is not null && keyFile is not null) throw new UllmeException("give --api-key or --api-key-file, not both.");
            if (keyFile is not null) key = ReadKey(keyFile);
            double shutdownSeconds = parse.GetValue(shutdown);
            if (!(shutdownSeconds >= 0)) throw new UllmeException($"--shutdown-timeout must be a non-negative number of seconds (got {shutdownSeconds}).");
            var options = new UllmeServerOptions
            {
                Host = parse.GetValue(host),
                Port = parse.GetValue(port),
                ModelName = parse.GetValue(modelName),
                MaxBatchTokens = parse.GetValue(maxBatchTokens),
                MaxBatchSize = parse.GetValue(maxBatchSize),
                MaxQueue = parse.GetValue(maxQueue),
                MaxInputTokens = parse.GetValue(maxInputTokens),
                MaxClientBatchSize = parse.GetValue(maxClientBatch),
                MaxBodyBytes = parse.GetValue(maxBody),
                ApiKey = key,
                Pooling = CommonOptions.Pooling(parse.GetValue(pooling)),
                Attention = CommonOptions.Attention(parse.GetValue(attention)),
                Instruction = parse.GetValue(instruction),
                Threads = parse.GetValue(threads),
                ShutdownTimeout = TimeSpan.FromSeconds(shutdownSeconds),
            };
            options.Validate();
            var loadOptions = CommonOptions.LoadOptions(parse.GetValue(dtype)!, parse.GetValue(device)!, parse.GetValue(threads), parse.GetValue(backend));
            CommonOptions.ApplyThreads(parse.GetValue(threads));

            using var loaded = CliConsole.LoadModel(parse.GetValue(model)!, loadOptions);
            // Server logs (warnings and errors, Ullme's own notes) go to stderr; stdout carries only the URL line.
            using var logging = LoggerFactory.Create(b => b
                .AddConsole(c => c.LogToStandardErrorThreshold = LogLevel.Trace)
                .AddSimpleConsole(c => { c.SingleLine = true; c.TimestampFormat = "HH:mm:ss "; })
                .AddFilter("Microsoft", LogLevel.Warning)
                .AddFilter("Ullme", LogLevel.Information));
            var server = UllmeServer.Create(loaded, options, logging);
            try
            {
                try
                {
                    server.StartAsync().GetAwaiter().GetResult();
                }
                catch (IOException e)
                {
                    throw new UllmeException($"cannot listen on {options.BindAddress()}:{options.Port}: {e.Message}");
                }
                if (options.ApiKey is null && !options.IsLoopback)
                    CliConsole.Warn($"no API key: anyone who can reach {options.BindAddress()} can use this server (add --api-key-file).");
                CliConsole.Note($"{loaded.ModelId} ({loaded.EmbeddingDimension} dimensions), batches of up to {options.MaxBatchSize} rows / {options.MaxBatchTokens} tokens, queue {options.MaxQueue}. SIGTERM or Ctrl+C stops it after the requests in flight.");
                foreach (string url in server.Urls) Console.Out.WriteLine($"Listening on {url}");
                Console.Out.Flush();
                server.WaitForShutdownAsync().GetAwaiter().GetResult();
            }
            finally
            {
                server.DisposeAsync().AsTask().GetAwaiter().GetResult();
            }
            CliConsole.Note("stopped.");
            return 0;
        });
        return command;
    }

    private static string ReadKey(string path)
    {
        if (!File.Exists(path)) throw new UllmeException($"--api-key-file '{path}' does not exist.");
        string key = File.ReadLines(path).FirstOrDefault()?.Trim() ?? "";
        if (key.Length == 0) throw new UllmeException($"--api-key-file '{path}': the first line is empty.");
        return key;
    }
}
