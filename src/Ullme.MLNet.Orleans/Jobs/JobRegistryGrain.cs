namespace Ullme.MLNet.Orleans.Jobs;

/// <summary>The persisted list of running jobs that workers poll for work.</summary>
internal sealed class JobRegistryGrain(
    [PersistentState("registry", ClusterNames.Storage)] IPersistentState<JobRegistryGrain.Jobs> state) : Grain, IJobRegistryGrain
{
    internal sealed class Jobs
    {
        public List<string> Active { get; set; } = [];
    }

    public async Task AddAsync(string jobId)
    {
        if (state.State.Active.Contains(jobId, StringComparer.Ordinal)) return;
        state.State.Active.Add(jobId);
        await state.WriteStateAsync();
    }

    public async Task RemoveAsync(string jobId)
    {
        if (state.State.Active.RemoveAll(j => j == jobId) == 0) return;
        await state.WriteStateAsync();
    }

    public Task<string[]> ActiveAsync() => Task.FromResult(state.State.Active.ToArray());
}
