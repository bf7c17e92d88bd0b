using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Ullme.MLNet.Server;

/// <summary>
/// The graceful stop (SIGTERM, Ctrl+C, <see cref="UllmeServer.StopAsync"/>, or the host application stopping): before
/// any hosted service stops (so before Kestrel closes its listener), the service stops admitting work and the drain
/// waits for the requests already admitted. Meanwhile the listener stays open: <c>/health</c> answers 503 (a
/// load balancer's or Kubernetes' readiness probe takes the replica out) and new requests get 503 with
/// <c>Connection: close</c>. Then Kestrel stops. The wait is bounded by the host's shutdown timeout.
/// </summary>
internal sealed class UllmeDrainService(UllmeService service) : IHostedLifecycleService
{
    public Task StartingAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StartAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StartedAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public async Task StoppingAsync(CancellationToken cancellationToken)
    {
        service.BeginStop();
        int active = service.ActiveRequests;
        if (active > 0) service.Logger.LogInformation("Stopping: draining {Count} request(s) in flight; /health and new requests answer 503.", active);
        try
        {
            await service.DrainAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            service.Logger.LogWarning("Stopping: the shutdown timeout passed with {Count} request(s) still in flight; they are aborted.", service.ActiveRequests);
        }
    }

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StoppedAsync(CancellationToken cancellationToken) => Task.CompletedTask;
}
