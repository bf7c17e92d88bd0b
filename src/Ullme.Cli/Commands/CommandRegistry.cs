using System.CommandLine;

namespace Ullme.Cli.Commands;

/// <summary>Every `ullme` sub-command. One file per command under Commands/, each exposing a static Create().</summary>
internal static class CommandRegistry
{
    public static IEnumerable<Command> All()
    {
        yield return EmbedCommand.Create();
        yield return ScoreCommand.Create();
        yield return RerankCommand.Create();
        yield return TokenizeCommand.Create();
        yield return InfoCommand.Create();
        yield return EvalCommand.Create();
        yield return TrainCommand.Create();
        yield return ServeCommand.Create();
        yield return ExportOnnxCommand.Create();
        yield return SiloCommand.Create();
        yield return JobCommand.Create();
    }
}
