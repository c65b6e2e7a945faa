using RetriKT.WebApi;

// `dotnet run -- train-demo-model <train.tsv> <model.zip> [iterations]` writes a small standard text classifier to
// serve before a RetriKT model exists; anything else starts the server (configure the model with --ModelPath).
if (args.Length >= 3 && args[0] == "train-demo-model")
{
    var iterations = args.Length > 3 ? int.Parse(args[3]) : 10;
    DemoTextClassifier.TrainAndSave(args[1], args[2], iterations);
    Console.WriteLine($"Wrote {Path.GetFullPath(args[2])}");
    return;
}

WebApiApp.Build(args).Run();

/// <summary>Entry point (public for WebApplicationFactory-style hosting).</summary>
public partial class Program;
