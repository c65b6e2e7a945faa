using RetriKT.TeacherServer;

// `dotnet RetriKT.TeacherServer.dll --ModelPath <hf-dir | model.bin> [--urls http://127.0.0.1:8000] [--BatchWindowMs 5]`
// serves the teacher as an OpenAI-compatible endpoint. With a port of 0 the bound address is printed as
// "RetriKT.TeacherServer listening on <url>" (the tests read that line).
var app = TeacherServerApp.Build(args);
await app.StartAsync();
foreach (var url in TeacherServerApp.Addresses(app)) Console.WriteLine($"RetriKT.TeacherServer listening on {url}");
await app.WaitForShutdownAsync();

