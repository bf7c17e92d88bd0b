using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Ullme.MLNet.Inference;

namespace Ullme.MLNet.Server;

/// <summary>
/// A stand-alone embedding / reranking / scoring server on Kestrel (what <c>ullme serve</c> runs):
/// <code>
/// using var model = UllmeModel.Load("default");
/// await using var server = UllmeServer.Create(model, new UllmeServerOptions { Port = 8080 });
/// await server.StartAsync();
/// Console.WriteLine(server.Urls[0]);          // http://127.0.0.1:8080
/// await server.WaitForShutdownAsync();        // SIGTERM / Ctrl+C: requests in flight finish, new ones are refused
/// </code>
/// To add the endpoints to an existing ASP.NET Core application instead, use <see cref="UllmeEndpoints.AddUllme"/>
/// and <see cref="UllmeEndpoints.MapUllmeEndpoints"/>. The model stays the caller's: dispose it after the server.
/// </summary>
public sealed class UllmeServer : IAsyncDisposable
{
    private readonly WebApplication _app;
    private int _started;

    private UllmeServer(WebApplication app) => _app = app;

    /// <summary>The ASP.NET Core application (services, lifetime, Kestrel).</summary>
    public WebApplication App => _app;

    /// <summary>Builds the server (nothing listens until <see cref="StartAsync"/>). Logs go to
    /// <paramref name="loggerFactory"/> (none by default: a library does not write to the console).</summary>
    public static UllmeServer Create(UllmeModel model, UllmeServerOptions? options = null, ILoggerFactory? loggerFactory = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        var o = options ?? new UllmeServerOptions();
        o.Validate();
        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions
        {
            Args = [],
            ApplicationName = typeof(UllmeServer).Assembly.GetName().Name,
            ContentRootPath = AppContext.BaseDirectory,
        });
        builder.Logging.ClearProviders();
        if (loggerFactory is not null) builder.Services.AddSingleton(loggerFactory);
        builder.Services.Configure<HostOptions>(h => h.ShutdownTimeout = o.ShutdownTimeout);
        builder.Services.Configure<ConsoleLifetimeOptions>(c => c.SuppressStatusMessages = true);
        builder.WebHost.ConfigureKestrel(k =>
        {
            k.AddServerHeader = false;
            k.Limits.MaxRequestBodySize = null;   // the endpoints enforce MaxBodyBytes themselves, with a JSON 413
            k.Listen(o.BindAddress(), o.Port);
        });
        builder.Services.AddUllme(model, o);
        var app = builder.Build();
        app.MapUllmeEndpoints();
        app.MapFallback(UllmeEndpoints.NotFound(app.Services.GetRequiredService<UllmeService>()));
        return new UllmeServer(app);
    }

    /// <summary>Starts listening; <see cref="Urls"/> then holds the bound addresses (the real port when 0 was asked).</summary>
    public Task StartAsync(CancellationToken cancellationToken = default)
    {
        Interlocked.Exchange(ref _started, 1);
        return _app.StartAsync(cancellationToken);
    }

    /// <summary>The addresses Kestrel listens on, e.g. <c>http://127.0.0.1:8080</c>.</summary>
    public IReadOnlyList<string> Urls =>
        _app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()?.Addresses.ToArray() ?? [];

    /// <summary>Graceful stop: first the drain, with the listener still open: <c>/health</c> and every new request
    /// answer 503 while the requests in flight finish (up to <see cref="UllmeServerOptions.ShutdownTimeout"/>); then
    /// Kestrel stops and closes the listener.</summary>
    public Task StopAsync(CancellationToken cancellationToken = default)
    {
        Interlocked.Exchange(ref _started, 0);
        return _app.StopAsync(cancellationToken);
    }

    /// <summary>Completes when the server has stopped: after <see cref="StopAsync"/>, SIGTERM or Ctrl+C.</summary>
    public Task WaitForShutdownAsync(CancellationToken cancellationToken = default) => _app.WaitForShutdownAsync(cancellationToken);

    internal UllmeService Service => _app.Services.GetRequiredService<UllmeService>();

    /// <summary>Stops (if running) and releases the server; the batching worker finishes what is queued first.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _started, 0) == 1) await _app.StopAsync().ConfigureAwait(false);
        await _app.DisposeAsync().ConfigureAwait(false);
    }
}
