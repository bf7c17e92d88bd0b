return Ullme.Cli.UllmeCli.Run(args);
