using RetriKT.WebApi;

// `dotnet run -- train-demo-model <train.tsv> <model.zip> [iterations]` writes a small standard text classifier to
// serve before a RetriKT model exists; anything else starts the server (configure the model with --ModelPath).
// Relative paths resolve against the caller's working directory. A model that cannot be served at start-up (missing,
// damaged, wrong schema) ends the process with one line on stderr and exit code 1; a switch that names no setting
// (--ModlePath), a Serving setting of the wrong type (--Serving:MaxTextLength abc) or a Serving:MaxTextLength below 1,
// with one line and exit code 2. --help (-h, -?) lists the settings
// with their defaults (exit code 0).
if (args.Length > 0 && args[0] == "train-demo-model")
{
    if (args.Length is < 3 or > 4)
    {
        // Without this a mistyped command fell through to the server, which then served a model.zip found in the folder.
        Console.Error.WriteLine("error: usage: train-demo-model <train.tsv> <model.zip> [iterations]");
        return 2;
    }
    // An empty output path failed only after training, naming no argument ("The value cannot be an empty string. (Parameter 'path')").
    if (string.IsNullOrWhiteSpace(args[1]) || string.IsNullOrWhiteSpace(args[2]))
    {
        Console.Error.WriteLine($"error: train-demo-model: expected a path for {(string.IsNullOrWhiteSpace(args[1]) ? "<train.tsv>" : "<model.zip>")}, found an empty value.");
        return 2;
    }
    int iterations = 10;
    if (args.Length > 3 && !(int.TryParse(args[3], out iterations) && iterations > 0))
    {
        Console.Error.WriteLine($"error: train-demo-model: iterations must be a positive integer, found '{args[3]}'.");
        return 2;
    }
    try { DemoTextClassifier.TrainAndSave(args[1], args[2], iterations); }
    catch (Exception e) when (e is not OutOfMemoryException)
    {
        Console.Error.WriteLine($"error: train-demo-model: {RetriKT.MLNet.ModelFiles.Describe(e)}");
        return 1;
    }
    Console.WriteLine($"Wrote {Path.GetFullPath(args[2])}");
    return 0;
}

if (RetriKT.Samples.CommandLineSwitches.AsksForHelp(args))
{
    Console.WriteLine(RetriKT.Samples.CommandLineSwitches.Usage<ServingOptions>(
        "Usage: dotnet RetriKT.WebApi.dll --ModelPath <model.zip> [--urls http://127.0.0.1:5000] [--Name value ...]\n" +
        "       dotnet RetriKT.WebApi.dll train-demo-model <train.tsv> <model.zip> [iterations]\n" +
        "Serves a model.zip (a RetriKT student or any ML.NET text classifier) at /predict, /explain and /healthz.",
        ["--ModelPath (default: appsettings.json's \"model.zip\", resolved against the working directory)"], section: "Serving"));
    return 0;
}
try
{
    // The host logs a start-up failure with every inner stack trace (~80 lines); this program says it in one line.
    WebApiApp.Build(args, b => b.Logging.AddFilter("Microsoft.Extensions.Hosting.Internal.Host", LogLevel.Critical)).Run();
    return 0;
}
catch (ArgumentException e)
{
    Console.Error.WriteLine($"error: {e.Message}");
    return 2;
}
catch (Exception e) when (e is not OutOfMemoryException)
{
    Console.Error.WriteLine($"error: {RetriKT.MLNet.ModelFiles.Describe(e)}");
    return 1;
}

/// <summary>Entry point (public for WebApplicationFactory-style hosting).</summary>
public partial class Program;
