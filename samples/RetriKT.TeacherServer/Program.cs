using RetriKT.TeacherServer;

// `dotnet RetriKT.TeacherServer.dll --ModelPath <hf-dir | model.bin> [--urls http://127.0.0.1:8000] [--BatchWindowMs 5]`
// serves the teacher as an OpenAI-compatible endpoint. With a port of 0 the bound address is printed as
// "RetriKT.TeacherServer listening on <url>" (the tests read that line). A setting it cannot run with ends the process
// with one line on stderr and exit code 2; a teacher it cannot load, or an address it cannot bind, with exit code 1.
// --help (-h, -?) lists the settings with their defaults (exit code 0).
if (RetriKT.Samples.CommandLineSwitches.AsksForHelp(args))
{
    Console.WriteLine(RetriKT.Samples.CommandLineSwitches.Usage<TeacherServerOptions>(
        "Usage: dotnet RetriKT.TeacherServer.dll --ModelPath <hf-dir | model.bin> [--urls http://127.0.0.1:8000] [--Name value ...]\n" +
        "Serves a teacher checkpoint as an OpenAI-compatible endpoint (/v1/completions, /v1/chat/completions, /v1/models, /health).",
        []));
    return 0;
}
try
{
    // The host logs a start-up failure with every inner stack trace (~25 lines); this program says it in one line.
    var app = TeacherServerApp.Build(args, configureBuilder: b => b.Logging.AddFilter("Microsoft.Extensions.Hosting.Internal.Host", LogLevel.Critical));
    await app.StartAsync();
    foreach (var url in TeacherServerApp.Addresses(app)) Console.WriteLine($"RetriKT.TeacherServer listening on {url}");
    await app.WaitForShutdownAsync();
    return 0;
}
catch (ArgumentException e)
{
    Console.Error.WriteLine($"error: {RetriKT.MLNet.ModelFiles.Describe(e)}");
    return 2;
}
catch (Exception e) when (e is not OutOfMemoryException)
{
    Console.Error.WriteLine($"error: {RetriKT.MLNet.ModelFiles.Describe(e)}");
    return 1;
}
